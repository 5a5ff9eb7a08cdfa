"""What a finished (or interrupted) search leaves behind: the Pareto front, the best
architecture with its weights and ONNX model, a plot and a markdown report that
compares the winners with the hand-designed reference architectures."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .objectives import Objective, pareto_front


def _complete(records, objective: Objective):
    """Evaluated search trials that carry both the accuracy and the latency."""
    return [r for r in records if r.status == "ok" and r.reference is None
            and objective.accuracy in r.metrics and objective.latency in r.metrics]


def best_trial(records, objective: Objective):
    """Highest score (single-objective modes) or highest accuracy on the front (pareto)."""
    done = _complete(records, objective)
    if not done:
        return None
    if objective.mode == "pareto":
        front = [done[i] for i in pareto_front([objective.values(r.metrics) for r in done])]
        return max(front, key=lambda r: objective.accuracy_of(r.metrics))
    return max(done, key=lambda r: objective.score(r.metrics))


def front_trials(records, objective: Objective):
    done = _complete(records, objective)
    idx = pareto_front([objective.values(r.metrics) for r in done])
    return sorted((done[i] for i in idx), key=lambda r: objective.latency_of(r.metrics))


def reference_rows(engine) -> list[tuple[str, dict]]:
    """Reference architectures with their evaluated metrics, or at least their table latency."""
    rows = {r.reference: dict(r.metrics) for r in engine.records if r.reference}
    table_ev = next((e for e in engine.evaluators() if e.name == "latency_table"), None)
    for name, arch in engine.space.reference_architectures().items():
        if name not in rows and table_ev is not None:
            try:
                rows[name] = dict(table_ev(arch, engine.space))
            except Exception as exc:  # noqa: BLE001 - a report must not die on a missing table entry
                rows[name] = {"note": f"no table latency: {exc}"}
    return sorted(rows.items(), key=lambda kv: kv[1].get(engine.objective.latency, float("inf")))


def write_best(engine, best) -> Path | None:
    """best/: arch.json, compact.txt, weights.pt (if trained), model.onnx."""
    if best is None:
        return None
    from search_spaces import Architecture

    from .export import export_onnx, model_from_checkpoint

    out = engine.folder.path / "best"
    out.mkdir(exist_ok=True)
    arch = Architecture.from_dict(best.arch)
    (out / "arch.json").write_text(arch.to_json(indent=2) + "\n", encoding="utf-8")
    (out / "compact.txt").write_text(engine.space.to_string(arch) + "\n", encoding="utf-8")
    weights = engine.folder.candidates / f"{arch.id}.pt"
    try:
        if weights.exists():
            shutil.copyfile(weights, out / "weights.pt")
            model, arch, space = model_from_checkpoint(out / "weights.pt")
        else:
            model, space = engine.space.build(arch), engine.space
        export_onnx(model, arch, space, out / "model.onnx")
    except NotImplementedError:
        pass  # a tabular space has no network to export
    return out


def plot_front(engine, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obj = engine.objective
    done = _complete(engine.records, obj)
    front = front_trials(engine.records, obj)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([obj.latency_of(r.metrics) for r in done], [obj.accuracy_of(r.metrics) for r in done],
               s=18, c="#9aa5b1", label="search trials")
    ax.plot([obj.latency_of(r.metrics) for r in front], [obj.accuracy_of(r.metrics) for r in front],
            "o-", c="#d1495b", label="Pareto front")
    for name, m in reference_rows(engine):
        if obj.accuracy in m and obj.latency in m:
            ax.scatter([m[obj.latency]], [m[obj.accuracy]], marker="*", s=120, c="#00798c")
            ax.annotate(name, (m[obj.latency], m[obj.accuracy]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if obj.target_ms:
        ax.axvline(obj.target_ms, ls="--", c="#edae49", label=f"target {obj.target_ms} ms")
    ax.set_xlabel(obj.latency)
    ax.set_ylabel(obj.accuracy)
    ax.set_title(f"{engine.space.name}: {len(done)} evaluated trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(engine) -> Path:
    """pareto.json, best/, pareto.png and report.md in the run folder; returns report.md."""
    obj = engine.objective
    folder = engine.folder.path
    front = front_trials(engine.records, obj)
    (folder / "pareto.json").write_text(json.dumps(
        [{"arch_id": r.arch_id, "arch": r.arch, "metrics": r.metrics} for r in front], indent=1), encoding="utf-8")
    best = best_trial(engine.records, obj)
    write_best(engine, best)
    has_plot = bool(_complete(engine.records, obj))
    if has_plot:
        plot_front(engine, folder / "pareto.png")
    search = [r for r in engine.records if r.reference is None]
    counts = {s: sum(1 for r in search if r.status == s) for s in ("ok", "rejected", "failed", "duplicate")}
    lines = [f"# Search report: {folder.name}", "",
             # The config's settings over the space's: a setting that builds no other network
             # (cpu_detector's hold) is not in settings() but changes what was searched.
             f"Space `{engine.space.name}` {json.dumps({**engine.space.settings(), **engine.cfg.space.settings})}, "
             f"strategy `{engine.cfg.strategy.name}`, "
             f"objective `{obj.mode}` on `{obj.accuracy}` / `{obj.latency}`"
             + (f", target {obj.target_ms} ms" if obj.target_ms else "") + f", seed {engine.cfg.seed}.", "",
             "Trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" (budget {engine.cfg.budget}).", ""]
    if best is not None:
        lines += ["## Best", "", f"`{best.arch_id}`: " + _metric_text(best.metrics, obj), "",
                  f"    {engine.space.to_string(engine.space.canonicalize(_arch(best)))}", "",
                  "Files: " + ", ".join(f"`best/{f.name}`" for f in sorted((folder / "best").iterdir())) + ".", ""]
    else:
        lines += ["No trial finished with both metrics yet.", ""]
    lines += ["## Pareto front", "", "| arch | " + obj.accuracy + " | " + obj.latency + " | other metrics |", "|---|---|---|---|"]
    for r in front:
        lines.append(f"| `{r.arch_id}` | {r.metrics[obj.accuracy]:.4f} | {r.metrics[obj.latency]:.3f} | "
                     + ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items()) if k not in (obj.accuracy, obj.latency)) + " |")
    lines += ["", "## Reference architectures", "",
              "Hand-designed baselines in the same space; accuracy only where the run evaluated them (config `references`).", "",
              "| reference | " + obj.accuracy + " | " + obj.latency + " |", "|---|---|---|"]
    for name, m in reference_rows(engine):
        acc = f"{m[obj.accuracy]:.4f}" if obj.accuracy in m else "not evaluated"
        lat = f"{m[obj.latency]:.3f}" if obj.latency in m else m.get("note", "-")
        lines.append(f"| {name} | {acc} | {lat} |")
    failed = [r for r in search if r.status == "failed"]
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- trial {r.trial} `{r.arch_id}`: {(r.error or '').splitlines()[0]}" for r in failed]
    if has_plot:
        lines += ["", "![Pareto front](pareto.png)"]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _arch(record):
    from search_spaces import Architecture

    return Architecture.from_dict(record.arch)


def _metric_text(metrics: dict, obj: Objective) -> str:
    keys = [obj.accuracy, obj.latency] + sorted(k for k in metrics if k not in (obj.accuracy, obj.latency))
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)
