"""The main job: standard vs robust U-Net on the synthetic knee data, attacked and compared.

Stages (each with its own progress bar):

1. data: the synthetic knee set (train / val splits, generated once into the cache);
2. train a standard U-Net (L1) for ``steps`` steps;
3. train a robust U-Net with the same budget (same steps, batches, optimiser) and
   the FNAF term of :mod:`fastfn.train.robust`;
4. evaluate both with :func:`fastfn.evaluation.protocol.evaluate_robustness`
   (clean metrics, random search and gradient attack on the same slices and
   feature draws) and :func:`fastfn.evaluation.lesions.evaluate_lesions` (error
   inside the synthetic data's annotated menisci and cartilage) and write the report.

``out/summary.json`` holds the headline numbers and whether the targets were met
(robust FN rate under the gradient attack at most half the standard one; clean
SSIM at most 0.01 lower). The evaluation features are drawn from other seeds
than the training features; training and evaluation share the attack budget.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fastfn.attack import AttackConfig, FeatureConfig
from fastfn.configs import as_plain
from fastfn.data import split_mask_specs
from fastfn.data.synthetic import default_data
from fastfn.evaluation.lesions import evaluate_lesions
from fastfn.evaluation.protocol import evaluate_robustness, fn_rate_at
from fastfn.fileio import atomic_write_bytes
from fastfn.models import build_model
from fastfn.train.config import DataConfig, OptimConfig, TrainConfig
from fastfn.train.data import build_loaders
from fastfn.train.distributed import resolve_device
from fastfn.train.robust import RobustConfig, make_robust_loss
from fastfn.train.trainer import Trainer, seed_everything

#: docs/METHOD.md's default false-negative threshold, reported beside the demo's own.
METHOD_THRESHOLD = 1e-3


@dataclass
class DemoConfig:
    """Scale and budget of the demo (run times of the defaults: docs/ROBUSTNESS.md).

    Attributes:
        size: k-space matrix and image size of the synthetic slices.
        train_volumes: synthetic training volumes.
        val_volumes: synthetic validation volumes (the attacked slices come from them).
        slices: slices per synthetic volume.
        chans: U-Net channels of the first level.
        pools: U-Net pooling layers.
        steps: training steps per model (the same budget for both).
        batch_size: training batch size (both models).
        lr: Adam learning rate (both models).
        mask: training mask.
        eval_masks: evaluation mask settings (comma-separated, each with its kind).
        eval_slices: validation slices attacked per mask.
        robust: robust training settings (its attack's ``seed`` differs from the evaluation's).
        robust_start: fraction of ``steps`` the robust U-Net trains clean before its
            adversarial term switches on (sets ``robust.start_step``; 0: robust from the
            first step). The same total budget either way.
        attack: the evaluation attack budget and features (its ``method`` is set per attack).
        device: "auto", "cpu" or "cuda".
        threads: CPU threads of torch (None: torch's default). 1 by default: the demo's
            small convolutions gain little from more threads, and on a CPU shared with
            other busy processes more threads are much slower (OpenMP spin-waiting).
        seed: seed of the weights and the training masks.
        progress: progress bars.
    """
    size: int = 128
    train_volumes: int = 8
    val_volumes: int = 2
    slices: int = 16
    chans: int = 8
    pools: int = 3
    steps: int = 400
    batch_size: int = 4
    lr: float = 1e-3
    mask: str = "random:4x@0.08"
    eval_masks: str = "random:4x@0.08"
    eval_slices: int = 32
    robust: RobustConfig = field(default_factory=lambda: RobustConfig(
        attack=AttackConfig(features=FeatureConfig(size=(5, 15)), method="pgd", random_restarts=1,
                            pgd_restarts=1, pgd_steps=2, pgd_step_size=0.25, seed=12345),
        beta=0.1))
    robust_start: float = 0.5
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(
        features=FeatureConfig(size=(10, 10)), random_restarts=11, pgd_restarts=4, pgd_steps=5,
        pgd_step_size=0.2, threshold=0.2))
    device: str = "auto"
    threads: int | None = 1
    seed: int = 0
    progress: bool = True


def robust_start_step(cfg: DemoConfig) -> int:
    """The optimiser step at which the robust U-Net's adversarial term switches on."""
    if not 0.0 <= cfg.robust_start < 1.0:
        raise ValueError(f"demo: robust_start must be in [0, 1), got {cfg.robust_start}")
    return int(round(cfg.robust_start * cfg.steps))


def synthetic_folders(cfg: DemoConfig) -> tuple[Path, Path]:
    """(train, val) folders of the synthetic set at the demo's scale (cached)."""
    train = default_data("train", size=cfg.size, volumes=cfg.train_volumes, slices=cfg.slices)
    val = default_data("val", size=cfg.size, volumes=cfg.val_volumes, slices=cfg.slices)
    return train, val


def _loaders(train: Path, val: Path, cfg: DemoConfig):
    """The trainer's own loaders over the demo's folders: training masks fresh per slice
    and epoch, drawn from (seed, epoch, slice, file), so both models see the same masks
    and a rerun the same numbers; validation masks fixed per volume."""
    data = DataConfig(train=str(train), val=str(val), mask=cfg.mask, batch_size=cfg.batch_size)
    train_loader, val_loader, _ = build_loaders(data, multicoil=False, seed=cfg.seed)
    return train_loader, val_loader


def train_unet(name: str, out: Path, cfg: DemoConfig, train_data: Any, val_data: Any,
               extra_loss: Callable | None) -> dict[str, Any]:
    """Train one U-Net; returns its checkpoint path, validation metrics and time."""
    model_config = {"chans": cfg.chans, "num_pool_layers": cfg.pools}
    tcfg = TrainConfig(model="unet", model_config=model_config, steps=cfg.steps,
                       val_every=cfg.steps, log_every=max(1, min(10, cfg.steps // 20)), seed=cfg.seed,
                       device=str(resolve_device(cfg.device)), panels=2, tensorboard=False,
                       progress=cfg.progress, optim=OptimConfig(lr=cfg.lr),
                       data=DataConfig(mask=cfg.mask, batch_size=cfg.batch_size))
    seed_everything(cfg.seed)  # both models start from the same weights
    model = build_model("unet", **model_config)
    print(f"[demo] training the {name} U-Net ({cfg.steps} steps, batch {cfg.batch_size})",
          flush=True)
    trainer = Trainer(model, tcfg, train_data, val_data, out_dir=out / name,
                      extra_loss=extra_loss)
    t0 = time.perf_counter()
    try:
        val = trainer.fit()
    finally:
        trainer.close()
    seconds = time.perf_counter() - t0
    return {"checkpoint": str(out / name / "last.pt"), "val": val, "train_seconds": seconds,
            "seconds_per_step": seconds / max(cfg.steps, 1)}


def run_demo(out: str | Path = "demo", cfg: DemoConfig | None = None) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns (and writes) ``summary.json``'s content."""
    cfg = cfg or DemoConfig()
    robust_start_step(cfg)  # a bad fraction fails before any training
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"[demo] 1/4 synthetic data ({cfg.train_volumes}+{cfg.val_volumes} volumes x "
          f"{cfg.slices} slices, {cfg.size}x{cfg.size})", flush=True)
    train_dir, val_dir = synthetic_folders(cfg)
    train_data, val_data = _loaders(train_dir, val_dir, cfg)

    print("[demo] 2/4 standard training", flush=True)
    std = train_unet("standard", out, cfg, train_data, val_data, None)
    print("[demo] 3/4 robust training", flush=True)
    robust = dataclasses.replace(cfg.robust, start_step=robust_start_step(cfg))
    rob = train_unet("robust", out, cfg, train_data, val_data, make_robust_loss(robust))

    print("[demo] 4/4 attacking both models", flush=True)
    report = evaluate_robustness(
        [std["checkpoint"], rob["checkpoint"]], val_dir, cfg.eval_masks, out / "evaluation",
        attack=cfg.attack, max_slices=cfg.eval_slices, batch_size=max(cfg.batch_size, 4),
        device=resolve_device(cfg.device), progress=cfg.progress, names=["standard", "robust"])
    lesions = evaluate_lesions([std["checkpoint"], rob["checkpoint"]], val_dir, out / "evaluation",
                               mask=split_mask_specs(cfg.eval_masks)[0],
                               names=["standard", "robust"], device=resolve_device(cfg.device))
    summary = summarize(report, std, rob, cfg, time.perf_counter() - t_start, out)
    summary["lesions"] = {label: {m: v["nmse_pooled"] for m, v in per_model.items()}
                          for label, per_model in lesions["labels"].items()}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    table = (out / "evaluation" / "robustness.md").read_text()
    print("\n" + table)
    print("Error inside the annotated anatomy boxes (the synthetic data's annotations):")
    print((out / "evaluation" / "lesions.md").read_text())
    print(_headline(summary))
    print(f"[demo] report: {out / 'evaluation' / 'robustness.md'} (figures beside it); "
          f"headline numbers: {out / 'summary.json'}", flush=True)
    return summary


def summarize(report: dict[str, Any], std: dict[str, Any], rob: dict[str, Any], cfg: DemoConfig,
              seconds: float, out: Path) -> dict[str, Any]:
    """Headline numbers of the first evaluation mask and the targets' verdicts."""
    spec = split_mask_specs(cfg.eval_masks)[0]
    r = report["results"][spec]
    s, b = r["standard"], r["robust"]
    fn_s, fn_r = s["pgd"]["fn_rate"], b["pgd"]["fn_rate"]
    ssim_s, ssim_r = s["clean"]["mean"]["ssim"], b["clean"]["mean"]["ssim"]
    return {
        "mask": spec,
        "fn_threshold": cfg.attack.threshold,
        "standard": _model_summary(s),
        "robust": _model_summary(b),
        "targets": {"fn_rate_pgd_at_most_half": bool(fn_r <= 0.5 * fn_s) if fn_s > 0 else None,
                    "clean_ssim_drop_at_most_0.01": bool(ssim_s - ssim_r <= 0.01),
                    "clean_ssim_drop": ssim_s - ssim_r},
        "robust_start_step": robust_start_step(cfg),
        "robust_step_overhead": _robust_overhead(std, rob, cfg),
        "train_seconds": {"standard": std["train_seconds"], "robust": rob["train_seconds"]},
        "n_slices": s["pgd"]["n_slices"],
        "wall_seconds": seconds,
        "config": as_plain(cfg),
        "report": str(out / "evaluation" / "robustness.md"),
        "figures": [str(out / "evaluation" / f) for f in report["figures"]],
    }


def _model_summary(r: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one model in the protocol's report."""
    return {"clean": r["clean"]["mean"], "fn_rate_pgd": r["pgd"]["fn_rate"],
            "fn_rate_pgd_ci95": r["pgd"]["fn_rate_ci95"], "fn_rate_random": r["random"]["fn_rate"],
            "median_worst_nmse_pgd": r["pgd"]["median_worst_nmse"],
            "fn_rate_pgd_at_1e-3": fn_rate_at(r["pgd"], METHOD_THRESHOLD),
            "fn_rate_random_at_1e-3": fn_rate_at(r["random"], METHOD_THRESHOLD)}


def _robust_overhead(std: dict[str, Any], rob: dict[str, Any], cfg: DemoConfig) -> float:
    """Time of a robust step over a clean one; the robust run's clean steps (before
    ``robust_start_step``) are counted at the standard run's rate and left out."""
    clean = max(std["seconds_per_step"], 1e-9)
    start = robust_start_step(cfg)
    robust_steps = max(cfg.steps - start, 1)
    return max(rob["train_seconds"] - start * clean, 0.0) / robust_steps / clean


def _headline(s: dict[str, Any]) -> str:
    t = s["targets"]
    return (f"[demo] {s['mask']}: FN rate under the gradient attack standard "
            f"{s['standard']['fn_rate_pgd']:.3f} -> robust {s['robust']['fn_rate_pgd']:.3f} "
            f"(target <= half: {t['fn_rate_pgd_at_most_half']}); clean SSIM "
            f"{s['standard']['clean']['ssim']:.4f} -> {s['robust']['clean']['ssim']:.4f} "
            f"(drop {t['clean_ssim_drop']:+.4f}, target <= 0.01: "
            f"{t['clean_ssim_drop_at_most_0.01']}); robust step costs "
            f"{s['robust_step_overhead']:.2f}x a clean step; total {s['wall_seconds'] / 60:.1f} min")

