"""Finishing passes for a searched detector: train longer, distil, prune, int8.

Each pass leaves a stage (``<stage>/model.onnx`` and, while it is a torch model,
``<stage>/weights.pt``) that is re-measured as deployed: mAP of the ONNX file in
onnxruntime, measured latency at fixed thread counts, file size, params and FLOPs.

Entry points::

    source, cfg = load_source("runs/evo-0", "finish.yaml")      # a run folder or an architecture
    result = finish(source, cfg, "runs/evo-0/finish")           # rows; finish.md / finish.json
    predict_files("runs/evo-0/finish/int8/model.onnx", ["a.jpg"], "out/")

Building blocks: :func:`distillation_losses`, :func:`prune_channels`,
:func:`quantize.quantize`, and the pass registry :data:`PASSES` (``@register_pass``).
The CLI (``nas.commands.finish``) imports this package only inside its commands, so
``nas --help`` does not pay for torch.
"""
from .config import FinishConfig, MeasureOptions, finish_config, load_finish_config
from .distill import DetectorOutputs, detector_outputs, distillation_losses, make_adapters
from .models import load_model, save_model
from .passes import PASSES, FinishContext, PassSpec, get_pass, register_pass
from .pipeline import FinishResult, FinishSource, finish, format_table, load_source
from .predict import Detector, predict_files
from .prune import prune_channels

__all__ = ["FinishConfig", "MeasureOptions", "finish_config", "load_finish_config", "DetectorOutputs",
           "detector_outputs", "distillation_losses", "make_adapters", "load_model", "save_model", "PASSES",
           "FinishContext", "PassSpec", "get_pass", "register_pass", "FinishResult", "FinishSource", "finish",
           "format_table", "load_source", "Detector", "predict_files", "prune_channels"]
