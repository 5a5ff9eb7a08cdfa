"""Finishing passes (train, distill, prune, int8), ``nas finish`` and ``nas predict``,
on a tiny architecture that has every block kind, SE, and chained depthwise-separable
blocks in a stage, the neck and the heads; 64 px, 16/8 images, a handful of steps."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from latency_tables.runtime import ort_session
from nas.export import save_checkpoint
from nas.finishing import (detector_outputs, distillation_losses, finish, load_model, load_source, make_adapters,
                           prune_channels, save_model)
from nas.finishing.distill import DistillLoss, DistillStudent, neck_widths
from nas.finishing.measure import images_to_input
from nas.finishing.models import export_stage
from nas.finishing.quantize import QuantSettings, preprocess, quantize
from search_spaces.ops import GhostBottleneck, InvertedResidual, ShuffleUnit

ROOT = Path(__file__).resolve().parents[1]
TINY = ("cpu_detector|s1x0.5:ir_k3_e3_re|s2x0.5:ghost_k3_e3_re+shuffle_k3_re"
        "|s3x0.5:dsconv_k3_re+dsconv_k3_se_hs+ir_k3_e3_se_re|s4x0.5:shuffle_k3_re+ghost_k3_e3_se_re"
        "|s5x0.5:ir_k3_e3_hs|neck:c48_d2_k3_pan|head:d2_k3")
TEACHER = "pp_lcnet_like_w0.5"  # neck width 96 vs the student's 48: a real (non-identity) adapter
FAST_MEASURE = {"min_runs": 3, "min_seconds": 0.01, "warmup": 1}


def run_nas(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nas", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def randomised(model, seed=0):
    """BN statistics and the class bias moved off their initial values, so outputs vary
    per point and per channel (a fresh net's scores are all ~0.01: comparisons would be trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.2)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
        for head in model.heads:
            pred = head[-1]
            pred.weight.copy_(torch.randn(pred.weight.shape, generator=g) * 3 / pred.in_channels ** 0.5)
            pred.bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def tiny(detector_space):
    arch = detector_space.from_string(TINY)
    return arch, detector_space


@pytest.fixture(scope="module")
def finish_yaml(tmp_path_factory, tiny_data3):
    path = tmp_path_factory.mktemp("cfg") / "finish.yaml"
    path.write_text(yaml.safe_dump({
        "space": {"num_classes": 3, "input_size": 64},
        "data": {"source": tiny_data3.source, "n_train": 16, "n_val": 8},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
        "measure": FAST_MEASURE,
        "distill": {"teacher_arch": TEACHER, "teacher_steps": 2},
        "prune": {"ratio": 0.5, "finetune_steps": 2},
        "int8": {"calibration_images": 4, "methods": ["minmax", "percentile"]},
    }))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, finish_yaml):
    out = tmp_path_factory.mktemp("finish")
    source, cfg = load_source(TINY, finish_yaml)
    return finish(source, cfg, out, log=lambda line: None)


# ----- prune ---------------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["l1", "bn"])
def test_pruning_keeps_network_valid_and_exportable(tiny, tmp_path, criterion):
    arch, space = tiny
    torch.manual_seed(0)
    model = randomised(space.build(arch))
    widths_before = {name: _internal_width(m) for name, m in model.named_modules() if _internal_width(m)}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        shapes = [t.shape for t in model(x)]

    report = prune_channels(model, ratio=0.5, criterion=criterion)

    assert report.params_after < report.params_before == sum(p.numel() for p in space.build(arch).parameters())
    assert report.params_after == sum(p.numel() for p in model.parameters())
    widths_after = {name: _internal_width(m) for name, m in model.named_modules() if name in widths_before}
    assert all(widths_after[n] < widths_before[n] for n in widths_before), (widths_before, widths_after)
    assert not model.training
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    assert [r.shape for r in ref] == [tuple(s) for s in shapes]  # interfaces unchanged

    path = export_stage(model, arch, space, tmp_path / "pruned.onnx", "prune", ["a", "b", "c"])
    got = ort_session(path).run(None, {"images": x.numpy()})
    for a, b in zip(ref, got):
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(a).max()))

    assert save_model(tmp_path / "pruned.pt", model, arch, space) == "module"
    reloaded, arch2, _ = load_model(tmp_path / "pruned.pt")
    assert arch2 == arch
    with torch.no_grad():
        np.testing.assert_array_equal(reloaded(x)[0].numpy(), ref[0])


def _internal_width(module) -> int | None:
    """The width the pruner may change, per block kind (None: not such a block)."""
    if isinstance(module, InvertedResidual):
        return module.dw[0].out_channels
    if isinstance(module, GhostBottleneck):
        return module.ghost1.cout
    if isinstance(module, ShuffleUnit) and module.branch[0][0].out_channels > 8:  # 8 is already the floor
        return module.branch[0][0].out_channels
    return None


# ----- distill -------------------------------------------------------------------------------
def test_distillation_losses_are_zero_when_student_equals_teacher(tiny):
    arch, space = tiny
    torch.manual_seed(0)
    teacher = randomised(space.build(arch))
    student = copy.deepcopy(teacher)
    x = torch.rand(2, 3, 64, 64)
    adapters = make_adapters(neck_widths(student), neck_widths(teacher))
    with torch.no_grad():
        losses = distillation_losses(detector_outputs(student, x), detector_outputs(teacher, x), adapters, 2.0)
    assert {k: float(v) for k, v in losses.items()} == {"kd_cls": 0.0, "kd_box": 0.0, "kd_feat": 0.0}

    other = randomised(space.build(arch), seed=1)
    with torch.no_grad():
        losses = distillation_losses(detector_outputs(other, x), detector_outputs(teacher, x), adapters, 2.0)
    assert all(float(v) > 0 for v in losses.values()), losses



def test_box_and_class_distillation_follow_the_teachers_confident_points():
    """The teacher's arbitrary boxes where it sees nothing teach nothing; where it is
    confident, a student box that differs costs."""
    from nas.finishing.distill import DetectorOutputs

    n, c = 8, 3
    logits = torch.full((1, n, c), -12.0)
    logits[0, 2, 1] = 4.0                                   # the teacher sees an object at point 2 only
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0]]).repeat(1, n, 1)
    neck = [torch.zeros(1, 4, 2, 2)]
    adapters = make_adapters([4], [4])
    teacher = DetectorOutputs(logits, boxes, neck)
    moved_background = boxes.clone()
    moved_background[0, 5] += 20.0                          # a background point's box differs
    kd = distillation_losses(DetectorOutputs(logits, moved_background, neck), teacher, adapters, 1.0)
    assert float(kd["kd_box"]) < 1e-6
    moved_object = boxes.clone()
    moved_object[0, 2] += 20.0                              # the confident point's box differs
    kd = distillation_losses(DetectorOutputs(logits, moved_object, neck), teacher, adapters, 1.0)
    assert float(kd["kd_box"]) > 0.3
    unsure = logits.clone()
    unsure[0, 2, 1] = -4.0                                  # the student doubts the teacher's object
    kd = distillation_losses(DetectorOutputs(unsure, boxes, neck), teacher, adapters, 1.0)
    assert float(kd["kd_cls"]) > 0.5

def test_distill_loss_trains_student_and_adapters_not_teacher(tiny, detector_space):
    from nas.commands.space import resolve_architecture

    arch, space = tiny
    t_arch, _ = resolve_architecture(TEACHER, space.settings())
    teacher = randomised(space.build(t_arch))
    student = space.build(arch)
    wrapper = DistillStudent(student, make_adapters(neck_widths(student), neck_widths(teacher)))
    assert [a.weight.shape[:2] for a in wrapper.adapters] == [(96, 48)] * 3
    loss_fn = DistillLoss(teacher, 2.0, 1.0, 1.0, 1.0)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    out = loss_fn(wrapper.train(), torch.rand(2, 3, 64, 64), targets)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(out[k].item() > 0 for k in ("kd_cls", "kd_box", "kd_feat"))
    assert all(a.weight.grad is not None for a in wrapper.adapters)
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training


# ----- int8 ----------------------------------------------------------------------------------
def test_int8_runs_in_onnxruntime_close_to_fp32(tiny, tmp_path):
    from evaluators.synthetic import make_synthetic
    from evaluators.trainer import prepare

    arch, space = tiny
    torch.manual_seed(0)
    model = randomised(space.build(arch))
    fp32 = export_stage(model, arch, space, tmp_path / "fp32.onnx", "train", ["a", "b", "c"])
    images = prepare(make_synthetic(12, 64, seed=5, split="train"), 64).images
    int8 = quantize(preprocess(fp32, tmp_path / "pre.onnx"), tmp_path / "int8.onnx", images[:8], "minmax",
                    QuantSettings(), metadata={"nas.stage": "int8-minmax"})

    session = ort_session(int8)
    ops = {n.op_type for n in __import__("onnx").load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["nas.stage"] == "int8-minmax" and json.loads(meta["nas.class_names"]) == ["a", "b", "c"]
    x = images_to_input(images[8:12])
    for i in range(len(x)):
        ref = ort_session(fp32).run(None, {"images": x[i:i + 1]})
        got = session.run(None, {"images": x[i:i + 1]})
        assert ref[0].std() > 0.05  # the comparison is not between constants
        assert np.abs(ref[0] - got[0]).max() < 0.1
        assert np.abs(ref[1] - got[1]).mean() < 2.0  # px, on a 64 px input


# ----- the pipeline and the CLI --------------------------------------------------------------
def test_finish_writes_and_measures_every_stage(finished):
    out = finished.out
    stages = [r["stage"] for r in finished.rows]
    assert stages == ["input", "train", "teacher", "distill", "prune", "int8-minmax", "int8-percentile"]
    for stage in ("input", "train", "teacher", "distill", "prune"):
        assert (out / stage / "model.onnx").is_file() and (out / stage / "weights.pt").is_file()
    assert (out / "int8" / "model.onnx").is_file() and not (out / "int8" / "preprocessed.onnx").exists()
    rows = {r["stage"]: r for r in json.loads((out / "finish.json").read_text())["stages"]}
    assert rows == {r["stage"]: r for r in finished.rows}
    for r in rows.values():
        assert 0.0 <= r["map50"] <= 1.0 and 0.0 <= r["map"] <= r["map50"] + 1e-9
        assert r["latency_ms@1t"] > 0 and r["latency_ms@2t"] > 0 and r["size_mb"] > 0 and r["flops"] > 0
        # Re-timed together at the end; the stage's own first measurement is kept beside it.
        assert r["first_latency_ms@1t"] > 0 and r["first_latency_ms@2t"] > 0
    assert rows["prune"]["params"] < rows["distill"]["params"] == rows["train"]["params"]
    assert rows["prune"]["parent"] == "distill" and rows["int8-minmax"]["parent"] == "prune"
    assert rows["distill"]["parent"] == "input"  # default init: same start as train, for a fair comparison
    assert "2 steps" in rows["teacher"]["note"] and "3 steps" in rows["distill"]["note"]  # distill.teacher_steps
    assert sum("kept as int8/model.onnx" in r["note"] for r in rows.values()) == 1
    md = (out / "finish.md").read_text()
    assert "| stage | mAP@.5 | mAP@[.5:.95] | latency 1T (ms) | latency 2T (ms) |" in md and "int8-percentile" in md
    pruned, _, _ = load_model(out / "prune" / "weights.pt")
    assert sum(p.numel() for p in pruned.parameters()) == rows["prune"]["params"]


def test_finish_cli_from_a_run_folder(tmp_path, tiny, tiny_data3, finish_yaml):
    from nas.config import EvaluatorConfig, SearchConfig, SpaceConfig, save_config

    arch, space = tiny
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)

    def search_config(proxy_steps):  # the run's config.yaml: what finishing's defaults come from
        proxy = EvaluatorConfig("train_proxy", {"steps": proxy_steps,
                                                "data": {"source": tiny_data3.source, "n_train": 16, "n_val": 8}})
        save_config(SearchConfig(space=SpaceConfig(settings=space.settings()), evaluators=(proxy,)), run / "config.yaml")

    search_config(400)
    (run / "best" / "arch.json").write_text(arch.to_json())
    torch.manual_seed(3)
    save_checkpoint(run / "best" / "weights.pt", space.build(arch), arch, space)

    assert load_source(str(run))[1].train.steps == 1600  # 4x the proxy's 400 steps
    search_config(2)
    source, cfg = load_source(str(run))
    assert source.trained and cfg.data == tiny_data3 and cfg.train.steps == 1200  # never fewer: 4x 2 steps is less
    cfg_file = tmp_path / "prune.yaml"
    cfg_file.write_text(yaml.safe_dump({"measure": FAST_MEASURE, "prune": {"finetune_steps": 1}}))
    res = run_nas("finish", run, "--passes", "prune", "--config", cfg_file, "--no-progress")
    assert res.returncode == 0, res.stderr
    rows = json.loads((run / "finish" / "finish.json").read_text())["stages"]
    assert [r["stage"] for r in rows] == ["input", "prune"] and "best/weights.pt" in rows[0]["note"]
    assert "| prune |" in res.stdout


def finished_cfg_data(finished):
    from evaluators.data import DataConfig

    return DataConfig(**json.loads((finished.out / "finish.json").read_text())["config"]["data"])


def test_finish_from_a_stage_checkpoint(finished, tmp_path):
    """A finishing stage's weights.pt (here the pruned module) is a source of its own:
    int8 of an earlier stage without re-running the passes before it."""
    weights = finished.out / "prune" / "weights.pt"
    source, cfg = load_source(str(weights), passes=("int8",))  # no --config: the finishing run's own
    assert source.trained and source.description.startswith(f"checkpoint {weights} (a pruned module")
    assert cfg.data == finished_cfg_data(finished) and cfg.measure.min_seconds == FAST_MEASURE["min_seconds"]
    res = run_nas("finish", weights, "--passes", "int8", "--out", tmp_path / "q", "--no-progress")
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "q" / "finish.json").read_text())["stages"]
    pruned = next(r for r in finished.rows if r["stage"] == "prune")
    assert rows[0]["stage"] == "input" and rows[0]["params"] == pruned["params"] and "pruned module" in rows[0]["note"]
    assert all(r["stage"].startswith("int8-") and r["parent"] == "input" for r in rows[1:])


def test_predict_writes_boxes_json_and_drawn_image(finished, tmp_path):
    from PIL import Image

    from evaluators.synthetic import make_synthetic

    image = make_synthetic(1, 80, seed=9, split="val")[0].image[:, :60]  # 80x60: letterboxed, mapped back
    Image.fromarray(image).save(tmp_path / "street.png")
    res = run_nas("predict", finished.out / "int8" / "model.onnx", tmp_path / "street.png", "--out", tmp_path / "pred",
                  "--score-threshold", "0.0")
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / "pred" / "street.json").read_text())
    assert (record["width"], record["height"]) == (60, 80) and record["detections"]
    for det in record["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 60 and 0 <= y1 <= y2 <= 80
        assert det["class_name"] == ["circle", "square", "triangle"][det["label"]]
    with Image.open(tmp_path / "pred" / "street.jpg") as drawn:
        assert drawn.size == (60, 80)


@pytest.mark.parametrize("case", ["missing run", "corrupt onnx", "text as jpg"])
def test_bad_inputs_exit_2_with_one_line_naming_the_file(case, finished, tmp_path):
    bad_jpg = tmp_path / "notes.jpg"
    bad_jpg.write_text("this is not an image\n")
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 20)
    good_png = tmp_path / "ok.png"
    __import__("PIL.Image").Image.new("RGB", (32, 32)).save(good_png)
    args, named = {
        "missing run": (["finish", tmp_path / "no-such-run/", "--passes", "train"], tmp_path / "no-such-run"),
        "corrupt onnx": (["predict", corrupt, good_png, "--out", tmp_path / "o"], corrupt),
        "text as jpg": (["predict", finished.out / "prune" / "model.onnx", good_png, bad_jpg, "--out", tmp_path / "o"],
                        bad_jpg),
    }[case]
    res = run_nas(*args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert str(named) in res.stderr
    assert not (tmp_path / "o").exists()  # nothing written before the bad input was found


def test_a_missing_teacher_checkpoint_is_a_config_error_before_any_training(tmp_path):
    from nas.config import ConfigError
    from nas.finishing.config import finish_config

    with pytest.raises(ConfigError, match=r"distill.*not found.*teacher_arch"):
        finish_config({"distill": {"teacher": str(tmp_path / "missing.pt")}})
