"""``finish``: run the finishing passes on one architecture and write the table.

Output folder::

    input/      the model as given (weights.pt, model.onnx), measured as the baseline
    teacher/    the distillation teacher (when distill runs)
    train/ distill/ prune/      weights.pt + model.onnx per stage
    int8/       model_<method>.onnx per calibration method, model.onnx = the kept one
    finish.md, finish.json      one row per stage, rewritten after every stage

Every row is measured on the stage's ONNX file: mAP through onnxruntime on the
validation split, latency per thread count, file size; params and FLOPs from
the torch model (for int8, of the fp32 model it was quantised from). When the passes
are done, all stages are timed again together (interleaved windows), and those
latencies replace the per-stage ones, so speed-ups compare stages timed alike.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from search_spaces import Architecture, SearchSpace
from search_spaces.errors import InputError
from search_spaces.files import write_text_atomic

from .config import DEFAULT_TRAIN, PROXY_SCHEDULE_FACTOR, FinishConfig, finish_config, load_finish_config
from .measure import retime_stages
from .models import class_names_of, load_model
from .passes import FinishContext, check_order, get_pass


@dataclass
class FinishSource:
    """Where finishing starts: an architecture, its space, and the model (trained or not)."""
    arch: Architecture
    space: SearchSpace
    model: nn.Module
    description: str
    trained: bool
    default_out: Path


# ----- sources -----------------------------------------------------------------------------
def run_base_config(run: Path) -> FinishConfig:
    """Defaults implied by a run folder: its space settings, the ``train_proxy`` data
    options and a schedule ``PROXY_SCHEDULE_FACTOR`` times the proxy's, at least
    ``DEFAULT_TRAIN``'s steps."""
    from evaluators.base import get_evaluator
    from nas.engine import RunFolder

    search = RunFolder(run).config()
    base = FinishConfig(space=dict(search.space.settings))
    for ev in search.evaluators:
        if ev.name == "train_proxy":
            proxy = get_evaluator(ev.name, **ev.options)
            steps = max(DEFAULT_TRAIN.steps, proxy.cfg.steps * PROXY_SCHEDULE_FACTOR)
            train = dataclasses.replace(proxy.cfg, steps=steps, time_budget_s=None)
            base = dataclasses.replace(base, data=proxy.data, train=train)
    return base


def source_from_run(run: Path, cfg: FinishConfig) -> FinishSource:
    """The run's ``best/arch.json`` with ``best/weights.pt`` (untrained when the search trained nothing)."""
    from nas.engine import RunFolder
    from search_spaces import get_space

    search = RunFolder(run).config()
    arch_path = run / "best" / "arch.json"
    if not arch_path.is_file():
        raise InputError(f"{run} has no best/arch.json (the search has no finished trial yet; "
                         f"'nas report {run}' writes best/ from the trials so far)")
    if cfg.space != dict(search.space.settings):
        raise InputError(f"the space settings of a run come from the run ({search.space.settings}); "
                         f"the config or flags ask for {cfg.space}")
    space = get_space(search.space.name, **search.space.settings)
    try:
        arch = space.canonicalize(Architecture.from_json(arch_path.read_text(encoding="utf-8")))
        space.validate(arch)
    except InputError as exc:
        raise InputError(f"{arch_path}: {exc}") from None
    weights = run / "best" / "weights.pt"
    out = run / "finish"
    if weights.is_file():
        model, _, _ = load_model(weights)
        return FinishSource(arch, space, model, f"run {run} (best/weights.pt)", True, out)
    torch.manual_seed(cfg.train.seed)
    return FinishSource(arch, space, space.build(arch), f"run {run} (best/arch.json, no weights: untrained)", False, out)


def source_from_arch(text: str, cfg: FinishConfig) -> FinishSource:
    """An architecture (file, JSON, compact string or reference name), freshly initialised."""
    from nas.commands.space import resolve_architecture

    try:
        arch, space = resolve_architecture(text, cfg.space)
    except InputError as exc:
        raise InputError(f"{text!r} is neither a run folder, a checkpoint nor an architecture: {exc}") from None
    torch.manual_seed(cfg.train.seed)
    return FinishSource(arch, space, space.build(arch), f"architecture {text if len(text) < 80 else arch.id} "
                        f"(untrained, seed {cfg.train.seed})", False, Path("runs") / f"finish-{arch.id[:12]}")


def checkpoint_base_config(path: Path) -> FinishConfig:
    """Defaults for a checkpoint source, from where it was written: a run's
    ``best/weights.pt`` -> the run's (as for the run folder); a finishing stage's
    ``<out>/<stage>/weights.pt`` -> that finishing run's config (data, schedule,
    measurement, pass options); anything else -> the built-in defaults."""
    run, finished = path.parent.parent, path.parent.parent / "finish.json"
    if path.parent.name == "best" and (run / "config.yaml").is_file():
        return run_base_config(run)
    if finished.is_file():
        try:
            config = json.loads(finished.read_text(encoding="utf-8"))["config"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{finished} is corrupt ({exc}); its stage checkpoints cannot be finished further") from None
        return finish_config({k: v for k, v in config.items() if k != "passes"}, where=str(finished))
    return FinishConfig()


def source_from_checkpoint(path: Path, cfg: FinishConfig) -> FinishSource:
    """A trained model file (``weights.pt`` of a run's best/ or of a finishing stage,
    pruned ones included): its architecture and space settings come from the file."""
    model, arch, space = load_model(path)  # its errors name the file
    settings = space.settings()
    conflicts = {k: v for k, v in cfg.space.items() if k in settings and settings[k] != v}
    if conflicts:
        raise InputError(f"the space settings of a checkpoint come from it ({settings}); "
                         f"the config or flags ask for {conflicts}")
    described = f"checkpoint {path}"
    if sum(p.numel() for p in model.parameters()) != sum(p.numel() for p in space.build(arch).parameters()):
        described += " (a pruned module; the architecture shown is the one it was pruned from)"
    return FinishSource(arch, space, model, described, True, path.parent / "finish")


def _looks_like_path(text: str) -> bool:
    # Architectures are JSON ("{..."), compact strings ("space|..." / "space:...") or names.
    return not text.lstrip().startswith("{") and not re.search(r"[|:]", text) and (
        "/" in text or "\\" in text or text.endswith((".json", ".yaml", ".pt")))


def load_source(text: str, config_path: str | Path | None = None,
                settings: dict | None = None, passes: tuple[str, ...] | None = None) -> tuple[FinishSource, FinishConfig]:
    """(source, resolved config) for ``nas finish RUN|CHECKPOINT|ARCH``.

    A folder is a run folder; a ``.pt`` file a model checkpoint (``weights.pt``);
    anything else an architecture. ``settings`` (CLI flags) override the config's space
    settings; ``passes`` its pass list.
    """
    path = Path(text)
    if path.is_dir():
        cfg = load_finish_config(config_path, run_base_config(path))
    elif _looks_like_path(text) and not path.exists():
        raise InputError(f"{text} does not exist (expected a run folder, a weights.pt checkpoint or an architecture file)")
    elif path.suffix == ".pt":
        cfg = load_finish_config(config_path, checkpoint_base_config(path))
    else:
        cfg = load_finish_config(config_path)
    if settings:
        cfg = dataclasses.replace(cfg, space={**cfg.space, **settings})
    if passes is not None:
        try:
            check_order(list(passes))
        except ValueError as exc:
            raise InputError(f"--passes: {exc}") from None
        cfg = dataclasses.replace(cfg, passes=tuple(passes))
    if path.is_dir():
        source = source_from_run(path, cfg)
    elif path.suffix == ".pt" and path.is_file():
        source = source_from_checkpoint(path, cfg)
    else:
        source = source_from_arch(text, cfg)
    return source, dataclasses.replace(cfg, space=source.space.settings())


# ----- the run -----------------------------------------------------------------------------
@dataclass
class FinishResult:
    out: Path
    rows: list[dict]
    seconds: float


def finish(source: FinishSource, cfg: FinishConfig, out: str | Path, log: Callable[[str], None] = print,
           progress: bool = False) -> FinishResult:
    """Measure the input, run ``cfg.passes`` in order, write every stage and the table to ``out``."""
    start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = source.space.settings()["input_size"]
    train_data, val_data = cfg.data.load(size)
    num_classes = source.space.settings()["num_classes"]
    if train_data.num_classes != num_classes:
        raise InputError(f"the data has {train_data.num_classes} classes but the model {num_classes}; "
                         f"set space: {{num_classes: {train_data.num_classes}}} (or --num-classes) for an architecture")
    header = {"source": source.description, "architecture": source.arch.to_dict(),
              "compact": _compact(source), "config": cfg.to_dict(), "environment": environment()}
    ctx = FinishContext(source.arch, source.space, cfg, train_data, val_data, out, class_names_of(cfg.data),
                        source.model.eval(), log=log, progress=progress,
                        on_change=lambda rows: write_tables(out, header, rows, cfg.measure.threads))
    ctx.record("input", source.model, note=source.description)
    model = source.model
    for name in cfg.passes:
        spec = get_pass(name)
        log(f"== {name}: {spec.help}")
        model = spec.run(model, ctx, cfg.options(name))
    m = cfg.measure
    if len(ctx.rows) > 1 and m.retime_windows:
        log(f"== re-timing all {len(ctx.rows)} stages together ({m.retime_windows} interleaved windows)")
        retime_stages(out, ctx.rows, m.threads, m.retime_windows, m.min_seconds / 3, m.warmup)
        ctx.on_change(ctx.rows)
    return FinishResult(out, ctx.rows, time.monotonic() - start)


def _compact(source: FinishSource) -> str | None:
    try:
        return source.space.to_string(source.arch)
    except NotImplementedError:
        return None


def environment() -> dict:
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


# ----- the table ---------------------------------------------------------------------------
def format_table(rows: list[dict], threads: tuple[int, ...]) -> str:
    """Markdown table of stage rows."""
    cols = [("stage", "stage", "{}"), ("map50", "mAP@.5", "{:.3f}"), ("map", "mAP@[.5:.95]", "{:.3f}")]
    cols += [(f"latency_ms@{t}t", f"latency {t}T (ms)", "{:.2f}") for t in threads]
    cols += [("size_mb", "size (MB)", "{:.2f}"), ("params", "params (M)", "{:.3f}"), ("flops", "FLOPs (G)", "{:.3f}"),
             ("note", "note", "{}")]
    scale = {"params": 1e-6, "flops": 1e-9}
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = [fmt.format(row[key] * scale[key] if key in scale else row[key]) for key, _, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(out: Path, header: dict, rows: list[dict], threads: tuple[int, ...]) -> None:
    """``finish.json`` and ``finish.md`` (atomic writes, so an interruption keeps the last table)."""
    payload = {**header, "stages": rows}
    md = [f"# Finishing: {header['source']}", "", f"    {header['compact']}" if header["compact"] else "", "",
          format_table(rows, threads), "",
          "mAP from the ONNX file in onnxruntime on the validation split; latency at batch 1 on "
          f"{header['environment']['cpu']}, the 20th percentile of timed onnxruntime runs "
          + ("(all stages timed again together at the end, in interleaved windows against the yardstick network)"
             if any(key.startswith("first_latency_ms@") for row in rows for key in row)
             else "(each stage when it was made)") + "; params and FLOPs (torch counter, "
          "batch 1) of the torch model (int8: of the fp32 model it was quantised from).", ""]
    for name, text in (("finish.json", json.dumps(payload, indent=2) + "\n"), ("finish.md", "\n".join(md))):
        write_text_atomic(out / name, text)
