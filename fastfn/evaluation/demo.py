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
from fastfn.configs import as_plain, check_choice
from fastfn.data import split_mask_specs
from fastfn.data.synthetic import default_data
from fastfn.evaluation.lesions import evaluate_lesions
from fastfn.evaluation.protocol import evaluate_robustness, fn_rate_at
from fastfn.evaluation.studies import StudyConfig, evaluate_studies
from fastfn.evaluation.tables import studies_markdown
from fastfn.fileio import atomic_write_bytes
from fastfn.data.annotations import annotations_path
from fastfn.models import MODEL_NAMES, build_model
from fastfn.train.config import DataConfig, OptimConfig, SchedConfig, TrainConfig
from fastfn.train.data import build_loaders, resolve_data_folders
from fastfn.train.distributed import resolve_device
from fastfn.train.robust import RobustConfig, make_robust_loss
from fastfn.train.run import preflight
from fastfn.train.trainer import Trainer, seed_everything

#: the demo's learning-rate schedules (TrainConfig ``sched.name``)
LR_SCHEDULES = ("none", "cosine")

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
        lr_schedule: "none" (constant) or "cosine" (decay to 0 over ``steps``; both models,
            so the two final iterates are compared where the step size has gone to zero
            rather than at a random point of Adam's noise).
        ema_decay: > 0: both models are evaluated and saved as an exponential moving
            average of their weights with this decay (``TrainConfig.ema_decay``; 0.95: a
            horizon of about 20 of the 400 steps); 0: the last iterate.
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
        data: a folder of fastMRI .h5 files (its train/ and val/ sub-folders, or a split of
            its volumes; single- or multi-coil to suit ``model``); None: the synthetic knees.
        model: the reconstructor both runs train: unet, cascade or varnet (multi-coil).
        model_config: its config keys (the U-Net's chans and num_pool_layers default to
            ``chans`` and ``pools``).
        crop_size: target crop (None: the files' reconstruction size).
        coils: receive coils of the synthetic data for a multi-coil model.
        annotations: a fastMRI+-style box CSV of the validation data for the lesion table
            (default: the one beside the validation folder, when there is one).
        contrast_detail: the contrast-detail study of both models (its sizes, contrasts and
            detection rate; ``fastfn.evaluation.studies``), on the first
            ``contrast_detail_slices`` validation slices with the evaluation attack's random
            search; None: no study.
        contrast_detail_threshold: the study's false-negative threshold: a feature the model
            drops entirely has a masked NMSE of about (c / (1 + c))^2 at contrast c, so the
            threshold bounds the faintest contrast that can count as missed (0.05: c >= 0.29;
            fainter contrasts are refused).
        contrast_detail_slices: validation slices of the study.
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
    lr_schedule: str = field(default="none", metadata={"choices": LR_SCHEDULES})
    ema_decay: float = 0.95
    mask: str = "random:4x@0.08"
    eval_masks: str = "random:4x@0.08"
    eval_slices: int = 32
    robust: RobustConfig = field(default_factory=lambda: RobustConfig(
        attack=AttackConfig(features=FeatureConfig(size=(5, 15)), method="pgd", random_restarts=1,
                            pgd_restarts=1, pgd_steps=2, pgd_step_size=0.25, seed=12345),
        beta=0.1, gradient_ratio=0.5))
    robust_start: float = 0.5
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(
        features=FeatureConfig(size=(10, 10)), random_restarts=11, pgd_restarts=4, pgd_steps=5,
        pgd_step_size=0.2, threshold=0.2))
    device: str = "auto"
    threads: int | None = 1
    seed: int = 0
    progress: bool = True
    data: str | None = None
    model: str = field(default="unet", metadata={"choices": MODEL_NAMES})
    model_config: dict[str, Any] = field(default_factory=dict)
    crop_size: int | None = None
    coils: int = 4
    annotations: str | None = None
    contrast_detail: StudyConfig | None = field(default_factory=lambda: StudyConfig(
        sizes=(3.0, 6.0, 10.0, 15.0), contrasts=(0.3, 0.5, 1.0, 2.0, 4.0)))
    contrast_detail_threshold: float = 0.05
    contrast_detail_slices: int = 8


def train_config(cfg: DemoConfig, device: torch.device, checkpoint_every: int | None = None) -> TrainConfig:
    """The training config of both models (and of every sweep point): the demo's budget,
    optimiser, schedule, masks and logging; ``checkpoint_every`` steps between ``last.pt``
    writes (default: the trainer's)."""
    check_choice("demo", "lr_schedule", cfg.lr_schedule, LR_SCHEDULES)
    extra = {} if checkpoint_every is None else {"ckpt_every": checkpoint_every}
    return TrainConfig(model=cfg.model, model_config=model_config(cfg), steps=cfg.steps,
                       val_every=cfg.steps, log_every=max(1, min(10, cfg.steps // 20)), seed=cfg.seed,
                       device=str(device), panels=2, tensorboard=False, progress=cfg.progress,
                       optim=OptimConfig(lr=cfg.lr), sched=SchedConfig(name=cfg.lr_schedule),
                       ema_decay=cfg.ema_decay,
                       data=DataConfig(mask=cfg.mask, batch_size=cfg.batch_size), **extra)


def robust_start_step(cfg: DemoConfig) -> int:
    """The optimiser step at which the robust U-Net's adversarial term switches on."""
    if not 0.0 <= cfg.robust_start < 1.0:
        raise ValueError(f"demo: robust_start must be in [0, 1), got {cfg.robust_start}")
    return int(round(cfg.robust_start * cfg.steps))


def model_config(cfg: DemoConfig) -> dict[str, Any]:
    """The config keys of the demo's model (the U-Net's width and depth from chans/pools)."""
    if cfg.model == "unet":
        return {"chans": cfg.chans, "num_pool_layers": cfg.pools, **cfg.model_config}
    return dict(cfg.model_config)


def synthetic_folders(cfg: DemoConfig, coils: int | None = None) -> tuple[Path, Path]:
    """(train, val) folders of the synthetic set at the demo's scale (cached)."""
    train = default_data("train", size=cfg.size, volumes=cfg.train_volumes, slices=cfg.slices, coils=coils)
    val = default_data("val", size=cfg.size, volumes=cfg.val_volumes, slices=cfg.slices, coils=coils)
    return train, val


def data_sources(cfg: DemoConfig, multicoil: bool) -> DataConfig:
    """The data of both trainings: the user's folder or the synthetic knees."""
    if cfg.data is None:
        train, val = synthetic_folders(cfg, cfg.coils if multicoil else None)
        return DataConfig(train=str(train), val=str(val), mask=cfg.mask, batch_size=cfg.batch_size,
                          crop_size=cfg.crop_size)
    root = Path(cfg.data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"demo: --data {root} is not a folder")
    return DataConfig(train=str(root), mask=cfg.mask, batch_size=cfg.batch_size, crop_size=cfg.crop_size)


def _loaders(data: DataConfig, multicoil: bool, cfg: DemoConfig):
    """The trainer's own loaders over the demo's data: training masks fresh per slice
    and epoch, drawn from (seed, epoch, slice, file), so both models see the same masks
    and a rerun the same numbers; validation masks fixed per volume."""
    train_loader, val_loader, _ = build_loaders(data, multicoil=multicoil, seed=cfg.seed)
    return train_loader, val_loader


def train_model(name: str, out: Path, cfg: DemoConfig, train_data: Any, val_data: Any,
                extra_loss: Callable | None) -> dict[str, Any]:
    """Train one model; returns its checkpoint path, validation metrics and time."""
    config = model_config(cfg)
    tcfg = train_config(cfg, resolve_device(cfg.device))
    seed_everything(cfg.seed)  # both models start from the same weights
    model = build_model(cfg.model, **config)
    print(f"[demo] training the {name} {cfg.model} ({cfg.steps} steps, batch {cfg.batch_size})",
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
    """Run the whole demo into ``out``; returns (and writes) ``summary.json``'s content.

    Everything that can be wrong with the inputs (a bad fraction, no usable files, data
    of the other coil kind than the model, a crop larger than the images) raises before
    any training, with nothing written.
    """
    cfg = cfg or DemoConfig()
    robust_start_step(cfg)  # a bad fraction fails before any training
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    probe = build_model(cfg.model, **model_config(cfg)).to(device)  # coil kind, and the pre-flight run
    multicoil = probe.multicoil
    t_start = time.perf_counter()
    where = cfg.data or (f"synthetic knees, {cfg.train_volumes}+{cfg.val_volumes} volumes x {cfg.slices} "
                         f"slices, {cfg.size}x{cfg.size}")
    print(f"[demo] 1/4 data ({where})", flush=True)
    data = data_sources(cfg, multicoil)
    train_data, val_data = _loaders(data, multicoil, cfg)
    _, val_src, _ = resolve_data_folders(data, multicoil)
    preflight(probe, [("training", train_data), ("validation", val_data)], cfg.mask, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    print("[demo] 2/4 standard training", flush=True)
    std = train_model("standard", out, cfg, train_data, val_data, None)
    print("[demo] 3/4 robust training", flush=True)
    robust = dataclasses.replace(cfg.robust, start_step=robust_start_step(cfg))
    rob = train_model("robust", out, cfg, train_data, val_data, make_robust_loss(robust))

    print("[demo] 4/4 attacking both models", flush=True)
    models, names = [std["checkpoint"], rob["checkpoint"]], ["standard", "robust"]
    report = evaluate_robustness(
        models, val_src, cfg.eval_masks, out / "evaluation",
        attack=cfg.attack, max_slices=cfg.eval_slices, batch_size=max(cfg.batch_size, 4),
        device=device, progress=cfg.progress, names=names)
    summary = summarize(report, std, rob, cfg, time.perf_counter() - t_start, out)
    if cfg.contrast_detail is not None:
        cd = evaluate_studies(models, val_src, split_mask_specs(cfg.eval_masks)[0], out / "evaluation" / "studies",
                              studies=["detectability"], attack=cfg.attack.replace(threshold=cfg.contrast_detail_threshold),
                              config=cfg.contrast_detail, max_slices=cfg.contrast_detail_slices,
                              batch_size=max(cfg.batch_size, 4), device=device, progress=cfg.progress, names=names)
        md = out / "evaluation" / "robustness.md"
        atomic_write_bytes(md, (md.read_text() + "\n" + studies_markdown(cd)).encode())
        summary["contrast_detail"] = {"threshold": cfg.contrast_detail_threshold,
                                      "sizes": list(cfg.contrast_detail.sizes),
                                      **{m: r["curve"] for m, r in cd["results"]["detectability"].items()}}
        summary["figures"] += [str(out / "evaluation" / "studies" / f) for f in cd["figures"]]
    boxes = _annotations(cfg, val_src)
    if boxes is not None:
        lesions = evaluate_lesions(models, val_src, out / "evaluation", annotations=boxes,
                                   mask=split_mask_specs(cfg.eval_masks)[0], names=names, device=device)
        summary["lesions"] = {label: {m: v["nmse_pooled"] for m, v in per_model.items()}
                              for label, per_model in lesions["labels"].items()}
    summary["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    print("\n" + (out / "evaluation" / "robustness.md").read_text())
    if boxes is not None:
        print(f"Error inside the annotated boxes ({boxes}):")
        print((out / "evaluation" / "lesions.md").read_text())
    print(_headline(summary))
    print(f"[demo] report: {out / 'evaluation' / 'robustness.md'} (figures beside it); "
          f"headline numbers: {out / 'summary.json'}", flush=True)
    return summary


def _annotations(cfg: DemoConfig, val_src: Any) -> Path | None:
    """The box CSV of the validation data: given, or beside its folder; None without one."""
    if cfg.annotations is not None:
        return Path(cfg.annotations)
    if isinstance(val_src, (str, Path)) and annotations_path(val_src).is_file():
        return annotations_path(val_src)
    return None


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

