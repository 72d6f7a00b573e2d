"""The robustness-quality trade-off: several robust-training settings at one budget.

:func:`run_sweep` trains the demo's standard model (the reference point) and one
robust model per :class:`SweepPoint` with the budget of a ``DemoConfig`` (the same
steps, batches, masks, optimiser and initial weights for every model), evaluates
each with the robustness protocol (the same validation slices and feature draws
for every model, ``fastfn.evaluation.protocol``) and writes into ``out``:

- ``sweep.json``: every point's clean NMSE/PSNR/SSIM, its false-negative rates with
  95% intervals (gradient attack and random search, at the demo threshold and at
  docs/METHOD.md's 1e-3), the paired differences against the standard model and the
  demo's targets (FN rate at most half the standard's, clean SSIM at most 0.01 lower);
- ``sweep.md``: the same as a table;
- ``trade_off.png``: clean SSIM and PSNR against the gradient attack's FN rate, one
  point per setting with its 95% interval, the standard model marked, and the target
  region shaded.

A point is a set of changes to the base ``RobustConfig`` (dotted keys, e.g.
``beta``, ``attack.features.intensity_mode``) and optionally ``start``, the fraction
of the steps trained clean first (``DemoConfig.robust_start``).

Resuming: every model lives in its own folder (``standard/``, ``points/<name>/``);
``last.pt`` is written every ``checkpoint_every`` steps, and a point whose
``point.json`` exists is not trained or evaluated again. A rerun with the same
arguments therefore continues an interrupted sweep from the last checkpoint of the
model it was training, and adding points to a finished sweep trains only those.
A point's setting is stored in ``points/<name>/setting.json``; a rerun that gives
the same name another setting is refused. While the standard model trains, its state
at every point's start step is kept (``standard/branch_<step>.pt``), and a robust
point starts from it: its first ``start`` steps are the standard model's (the
clean-only steps are identical, so they are trained once; a point's own logs begin
at its start step).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from fastfn.configs import as_plain
from fastfn.data import split_mask_specs
from fastfn.evaluation.demo import (METHOD_THRESHOLD, DemoConfig, data_sources, model_config)
from fastfn.evaluation.demo import train_config as demo_train_config
from fastfn.evaluation.protocol import evaluate_robustness, fn_rate_at
from fastfn.fileio import atomic_write_bytes
from fastfn.models import build_model
from fastfn.train.checkpoint import load_checkpoint
from fastfn.train.config import DataConfig, OptimConfig, TrainConfig, parse_override, set_dotted
from fastfn.train.data import build_loaders, resolve_data_folders
from fastfn.train.distributed import resolve_device
from fastfn.train.robust import RobustConfig, make_robust_loss
from fastfn.train.run import preflight
from fastfn.train.trainer import Trainer, seed_everything

STANDARD = "standard"
#: the point key that is not a RobustConfig key: the fraction of steps trained clean first
START_KEY = "start"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


@dataclass
class SweepPoint:
    """One robust-training setting of a sweep.

    Attributes:
        name: its label and folder name (letters, digits and ``._=+-``; not "standard").
        changes: dotted ``RobustConfig`` keys -> values applied to the base robust config
            (``{"beta": 0.05, "attack.features.intensity_mode": "local"}``), and
            ``"start"``: the fraction of the steps trained clean first (default: the
            base ``DemoConfig.robust_start``).
    """
    name: str
    changes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name == STANDARD:
            raise ValueError(f"sweep point name {self.name!r}: use letters, digits and ._=+- "
                             f"(not starting with one of ._=+-), and not {STANDARD!r}")


def parse_point(text: str) -> SweepPoint:
    """``"NAME"`` or ``"NAME:key=value;key=value"`` (values parsed as YAML, e.g.
    ``"local:attack.features.intensity_mode=local;attack.features.intensity=[0, 0.5]"``)."""
    name, _, rest = text.partition(":")
    changes = dict(parse_override(part) for part in rest.split(";") if part.strip())
    return SweepPoint(name.strip(), changes)


def vary_points(text: str) -> list[SweepPoint]:
    """``"key=v1,v2,..."``: one point per value, named ``key=value`` (commas inside
    brackets belong to a value: ``attack.features.intensity=[0,1],[0,0.5]``)."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"--vary {text!r} must look like KEY=V1,V2,... (e.g. beta=0.03,0.1,0.3)")
    points = []
    for raw in _split_top_level(values):
        _, value = parse_override(f"{key}={raw}")
        label = re.sub(r"[^A-Za-z0-9._=+-]+", "_", f"{key.split('.')[-1]}={raw.strip()}").strip("_")
        points.append(SweepPoint(label, {key.strip(): value}))
    return points


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur] if p.strip()]


def point_setting(base: DemoConfig, point: SweepPoint) -> tuple[RobustConfig, float]:
    """The robust config and the clean-start fraction of ``point`` (validated)."""
    changes = dict(point.changes)
    start = float(changes.pop(START_KEY, base.robust_start))
    if not 0.0 <= start < 1.0:
        raise ValueError(f"sweep point {point.name!r}: start must be in [0, 1), got {start}")
    d = {"robust": as_plain(base.robust)}
    for key, value in changes.items():
        if key == "start_step":
            raise ValueError(f"sweep point {point.name!r}: set 'start' (a fraction of the steps), "
                             f"not start_step")
        set_dotted(d, f"robust.{key}", list(value) if isinstance(value, tuple) else value,
                   source=f"sweep point {point.name!r}")
    robust = RobustConfig.from_dict(d["robust"], source=f"sweep point {point.name!r}")
    return robust, start


def start_step(base: DemoConfig, start: float) -> int:
    return int(round(start * base.steps))


def run_sweep(out: str | Path, base: DemoConfig, points: Sequence[SweepPoint], *,
              checkpoint_every: int | None = None) -> dict[str, Any]:
    """Train and evaluate the standard model and every point; write ``sweep.json``,
    ``sweep.md`` and ``trade_off.png`` into ``out``; returns ``sweep.json``'s content.

    Args:
        out: the sweep folder (a rerun continues it).
        base: scale, data, budget, evaluation and the base robust settings.
        points: the robust settings (unique names).
        checkpoint_every: steps between ``last.pt`` writes (default: a tenth of the steps).

    Every setting is checked, and the data and model are tried on a batch, before any
    training.
    """
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep: point names must be unique, got {names}")
    settings = {p.name: point_setting(base, p) for p in points}
    if base.threads is not None:
        torch.set_num_threads(base.threads)
    out = Path(out)
    device = resolve_device(base.device)
    multicoil = build_model(base.model, **model_config(base)).multicoil
    data = data_sources(base, multicoil)
    train_data, val_data, _ = build_loaders(data, multicoil=multicoil, seed=base.seed)
    _, val_src, _ = resolve_data_folders(data, multicoil)
    preflight(build_model(base.model, **model_config(base)).to(device),
              [("training", train_data), ("validation", val_data)], base.mask, device)
    for p in points:
        _check_setting(out / "points" / p.name, _setting_record(base, p, settings[p.name]))
    out.mkdir(parents=True, exist_ok=True)
    tcfg = train_config(base, device, checkpoint_every)
    branches = sorted({start_step(base, s) for _, s in settings.values()} - {0})

    evaluate = dict(val_src=val_src, device=device, base=base)
    std_dir = out / STANDARD
    if not (std_dir / "point.json").is_file():
        print(f"[sweep] {STANDARD}: training", flush=True)
        seconds = _train(std_dir, base, tcfg, train_data, val_data, None, branches=branches)
        _evaluate_point(std_dir, STANDARD, {"robust": None, "start": None}, seconds, **evaluate)
    for p in points:
        folder = out / "points" / p.name
        if (folder / "point.json").is_file():
            continue
        robust, start = settings[p.name]
        first = start_step(base, start)
        robust = dataclasses.replace(robust, start_step=first)
        record = _setting_record(base, p, settings[p.name])
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "setting.json", json.dumps(record, indent=2).encode())
        branch = std_dir / f"branch_{first:07d}.pt"
        print(f"[sweep] {p.name}: training (robust from step {first})", flush=True)
        seconds = _train(folder, base, tcfg, train_data, val_data, make_robust_loss(robust),
                         start_from=branch if branch.is_file() else None)
        _evaluate_point(folder, p.name, record, seconds, **evaluate)
    return write_summary(out, base, points)


def train_config(base: DemoConfig, device: torch.device, checkpoint_every: int | None) -> TrainConfig:
    """The demo's training config of both models, with periodic ``last.pt`` writes."""
    return demo_train_config(base, device, checkpoint_every or max(1, base.steps // 10))


def _train(folder: Path, base: DemoConfig, tcfg: TrainConfig, train_data: Any, val_data: Any,
           extra_loss: Any, *, branches: Iterable[int] = (), start_from: Path | None = None) -> float:
    """Train one model into ``folder`` to ``tcfg.steps``: continue its ``last.pt``, else
    start from ``start_from`` (a branch of the standard run), else from the demo's initial
    weights. Keeps ``branch_<step>.pt`` at each of ``branches``. Returns the seconds spent."""
    last = folder / "last.pt"
    if last.is_file() and int(load_checkpoint(last)["step"]) >= tcfg.steps:
        return 0.0
    seed_everything(base.seed)  # every model starts from the same weights
    model = build_model(base.model, **model_config(base))
    trainer = Trainer(model, tcfg, train_data, val_data, out_dir=folder, extra_loss=extra_loss)
    t0 = time.perf_counter()
    try:
        if last.is_file():
            trainer.resume(last)
        elif start_from is not None:
            trainer.resume(start_from)
        elif trainer.logger is not None:
            trainer.logger.truncate_after(0)
        for step in sorted(branches):
            if trainer.step < step and not (folder / f"branch_{step:07d}.pt").is_file():
                trainer.fit(until=step)
                trainer.save(f"branch_{step:07d}.pt")
        trainer.fit()
    finally:
        trainer.close()
    return time.perf_counter() - t0


def _setting_record(base: DemoConfig, point: SweepPoint, setting: tuple[RobustConfig, float]
                    ) -> dict[str, Any]:
    robust, start = setting
    return {"name": point.name, "changes": json.loads(json.dumps(point.changes)),
            "start": start, "start_step": start_step(base, start),
            "robust": as_plain(dataclasses.replace(robust, start_step=start_step(base, start)))}


def _check_setting(folder: Path, record: Mapping[str, Any]) -> None:
    path = folder / "setting.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        # read through today's RobustConfig: a setting stored before a field existed gets
        # that field's default, which is what the stored run trained with
        try:
            stored_robust = as_plain(RobustConfig.from_dict(stored["robust"], source=str(path)))
        except (KeyError, TypeError, ValueError):
            stored_robust = stored["robust"]
        if stored_robust != record["robust"] or stored["start_step"] != record["start_step"]:
            raise ValueError(f"sweep point {record['name']!r}: {folder} holds a run of another "
                             f"setting ({path}); give this one another name or remove the folder")


def _evaluate_point(folder: Path, name: str, record: Mapping[str, Any], seconds: float, *,
                    val_src: Any, device: torch.device, base: DemoConfig) -> dict[str, Any]:
    report = evaluate_robustness(
        [folder / "last.pt"], val_src, base.eval_masks, folder / "evaluation",
        attack=base.attack, max_slices=base.eval_slices, batch_size=max(base.batch_size, 4),
        device=device, progress=base.progress, names=[name])
    spec = split_mask_specs(base.eval_masks)[0]
    point = {"name": name, **{k: v for k, v in record.items() if k != "name"},
             **point_metrics(report["results"][spec][name]), "mask": spec,
             "train_seconds_last_session": seconds}
    atomic_write_bytes(folder / "point.json", json.dumps(point, indent=2).encode())
    return point


def point_metrics(r: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of one model in the protocol's report that a sweep point keeps."""
    out = {"clean": {k: r["clean"]["mean"][k] for k in ("nmse", "psnr", "ssim")},
           "n_slices": r["pgd"]["n_slices"]}
    for method in ("pgd", "random"):
        if method in r:
            out[method] = {"fn_rate": r[method]["fn_rate"], "fn_rate_ci95": r[method]["fn_rate_ci95"],
                           "fn_count": r[method]["fn_count"],
                           "median_worst_nmse": r[method]["median_worst_nmse"],
                           "fn_rate_at_1e-3": fn_rate_at(r[method], METHOD_THRESHOLD)}
    return out


def compare(point: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Paired differences of a point against the standard model and the demo's targets."""
    fn_s, fn_r = reference["pgd"]["fn_rate"], point["pgd"]["fn_rate"]
    drop = reference["clean"]["ssim"] - point["clean"]["ssim"]
    return {"ssim_drop": drop, "psnr_drop": reference["clean"]["psnr"] - point["clean"]["psnr"],
            "fn_ratio_pgd": fn_r / fn_s if fn_s > 0 else math.nan,
            "fn_rate_pgd_at_most_half": bool(fn_r <= 0.5 * fn_s) if fn_s > 0 else None,
            "clean_ssim_drop_at_most_0.01": bool(drop <= 0.01)}


def write_summary(out: Path, base: DemoConfig, points: Sequence[SweepPoint]) -> dict[str, Any]:
    """``sweep.json``, ``sweep.md`` and ``trade_off.png`` from the finished points."""
    reference = json.loads((out / STANDARD / "point.json").read_text())
    rows = []
    for p in points:
        point = json.loads((out / "points" / p.name / "point.json").read_text())
        rows.append({**point, "vs_standard": compare(point, reference)})
    summary = {"reference": reference, "points": rows, "fn_threshold": base.attack.threshold,
               "method_threshold": METHOD_THRESHOLD, "config": as_plain(base),
               "figure": str(out / "trade_off.png")}
    atomic_write_bytes(out / "sweep.json", json.dumps(summary, indent=2).encode())
    atomic_write_bytes(out / "sweep.md", sweep_table(summary).encode())
    trade_off_figure(summary, out / "trade_off.png")
    return summary


def sweep_table(summary: Mapping[str, Any]) -> str:
    """The sweep as a Markdown table (one row per model, the standard first)."""
    thr = summary["fn_threshold"]
    lines = [f"| setting | start step | PSNR | SSIM | SSIM drop | FN rate, gradient attack [95% CI] "
             f"| FN rate, random search [95% CI] | FN pgd at 1e-3 | targets (FN <= half, SSIM drop <= 0.01) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def fn(r: Mapping[str, Any], method: str) -> str:
        if method not in r:
            return "-"
        m = r[method]
        lo, hi = m["fn_rate_ci95"]
        return f"{m['fn_rate']:.3f} [{lo:.3f}, {hi:.3f}] ({m['fn_count']}/{r['n_slices']})"

    ref = summary["reference"]
    lines.append(f"| {STANDARD} | - | {ref['clean']['psnr']:.2f} | {ref['clean']['ssim']:.4f} | - | "
                 f"{fn(ref, 'pgd')} | {fn(ref, 'random')} | {ref['pgd']['fn_rate_at_1e-3']:.3f} | - |")
    for r in summary["points"]:
        c = r["vs_standard"]
        verdict = (f"{'met' if c['fn_rate_pgd_at_most_half'] else 'not met'}, "
                   f"{'met' if c['clean_ssim_drop_at_most_0.01'] else 'not met'}")
        lines.append(f"| {r['name']} | {r['start_step']} | {r['clean']['psnr']:.2f} | "
                     f"{r['clean']['ssim']:.4f} | {c['ssim_drop']:+.4f} | {fn(r, 'pgd')} | "
                     f"{fn(r, 'random')} | {r['pgd']['fn_rate_at_1e-3']:.3f} | {verdict} |")
    return "\n".join(lines) + f"\n\nFN threshold (masked NMSE): {thr}; mask {ref['mask']}; " \
                              f"{ref['n_slices']} slices.\n"


def trade_off_figure(summary: Mapping[str, Any], path: Path) -> Path:
    """Clean SSIM (left) and PSNR (right) against the gradient attack's FN rate, with the
    FN rate's 95% interval per point; the target region (FN rate at most half the
    standard's, SSIM at most 0.01 lower) shaded on the SSIM panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastfn.evaluation.figures import save_figure
    ref = summary["reference"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((axes[0], "ssim", "clean SSIM"), (axes[1], "psnr", "clean PSNR (dB)")):
        for r, style in [(ref, dict(marker="s", color="k"))] + [
                (p, dict(marker="o", color="C0")) for p in summary["points"]]:
            x = r["pgd"]["fn_rate"]
            lo, hi = r["pgd"]["fn_rate_ci95"]
            ax.errorbar([x], [r["clean"][metric]], xerr=[[max(x - lo, 0.0)], [max(hi - x, 0.0)]], capsize=3,
                        ls="none", **style)
            ax.annotate(r["name"], (x, r["clean"][metric]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.set_xlabel(f"FN rate, gradient attack (masked NMSE >= {summary['fn_threshold']:g})")
        ax.set_ylabel(label)
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    ax = axes[0]
    y0 = ref["clean"]["ssim"] - 0.01
    top = max([ref["clean"]["ssim"]] + [p["clean"]["ssim"] for p in summary["points"]])
    ax.fill_between([0, 0.5 * ref["pgd"]["fn_rate"]], [y0, y0], [top + 0.005] * 2, color="C2", alpha=0.15,
                    label="target: FN <= half, SSIM drop <= 0.01")
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"robustness vs clean quality ({ref['mask']}, {ref['n_slices']} slices; "
                 f"standard = black square)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["SweepPoint", "parse_point", "vary_points", "point_setting", "run_sweep",
           "write_summary", "sweep_table", "trade_off_figure", "point_metrics", "compare",
           "STANDARD", "START_KEY"]
