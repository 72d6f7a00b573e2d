"""A whole training run, as ``fastfn train`` does it: data, model, checks, trainer, summary.

Nothing is written into the run folder before every check has passed (data found,
mask fits the data, model runs on a batch, a resumed checkpoint is of this model and
config), so a bad invocation never overwrites an existing run with garbage.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from fastfn.data import check_batch
from fastfn.fileio import atomic_write_bytes
from fastfn.models import build_model, load_weights
from fastfn.train.checkpoint import CheckpointError, check_same_model, load_checkpoint
from fastfn.train.config import TrainConfig, save_config
from fastfn.train.data import build_loaders
from fastfn.train.distributed import DistInfo, broadcast_object, cleanup, init_distributed
from fastfn.train.robust import make_robust_loss
from fastfn.train.trainer import ExtraLoss, Trainer, seed_everything

RUN_FILES = ("last.pt", "best.pt")


def preflight(model: torch.nn.Module, loaders: Iterable[tuple[str, Any]], mask_spec: str,
              device: torch.device) -> None:
    """Load one batch of every loader, check it, and run the model on one slice of it."""
    for what, loader in loaders:
        try:
            with torch.random.fork_rng(devices=[]):
                batch = next(iter(loader))
        except StopIteration:
            raise ValueError(f"{what} data yielded no batch") from None
        except (KeyError, OSError) as e:
            raise ValueError(f"{what} data: {e}") from e
        check_batch(batch, mask_spec, what)
        k = batch["masked_kspace"][:1].to(device)
        m = batch["mask"][:1].to(device)
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(k, m, crop_size=tuple(batch["target"].shape[-2:]))
        except RuntimeError as e:
            raise ValueError(f"{what} data: model {type(model).__name__} cannot run on k-space "
                             f"{tuple(k.shape)} with mask {tuple(m.shape)}: "
                             f"{str(e).splitlines()[0]}") from e
        finally:
            model.train(was)
        if out.shape[-2:] != batch["target"].shape[-2:]:
            raise ValueError(f"model output {tuple(out.shape)} does not match the target "
                             f"{tuple(batch['target'].shape)}")


def check_out_dir(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (``out/last.pt``), or None for a fresh run.

    Raises ValueError when ``out`` already holds a run and ``resume`` is False, and
    FileNotFoundError when ``resume`` is True but there is no ``out/last.pt``.
    """
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: {last} does not exist (nothing to resume)")
        return last
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing:
        raise ValueError(f"run folder {out} already holds {', '.join(existing)}; pass --resume "
                         f"to continue that run, or choose another --out")
    return None


def run_training(cfg: TrainConfig, out: str | Path, *, resume: bool = False,
                 extra_loss: ExtraLoss | None = None, dist: DistInfo | None = None
                 ) -> dict[str, Any]:
    """Train ``cfg.model`` into the run folder ``out``; returns the summary (also
    ``out/summary.json``): the final and best validation metrics, steps and wall time.

    Under torchrun, call it in every process: DDP is set up from the environment.
    """
    out = Path(out)
    own_dist = dist is None
    dist = dist or init_distributed(cfg.device)
    trainer: Trainer | None = None
    try:
        resume_from = check_out_dir(out, resume)
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed, cfg.deterministic)
        state = load_checkpoint(resume_from) if resume_from is not None else None
        if state is not None and state["model_name"] != cfg.model:
            check_same_model(state, cfg.model, {}, resume_from)  # raises, naming both
        model = build_model(cfg.model, **cfg.model_config)
        if state is not None:  # before anything is written: is it this model and config?
            check_same_model(state, cfg.model, _model_config(model, cfg), resume_from)
            del state
        elif cfg.init_from is not None:
            init_weights(model, cfg)
        model.to(dist.device)
        # Rank 0 may generate the synthetic default data; the others wait for it.
        if dist.is_main:
            loaders = build_loaders(cfg.data, model.multicoil, cfg.seed, dist)
        broadcast_object(None, dist)
        if not dist.is_main:
            loaders = build_loaders(cfg.data, model.multicoil, cfg.seed, dist)
        train_loader, val_loader, desc = loaders
        preflight(model, [("training", train_loader), ("validation", val_loader)],
                  cfg.data.mask, dist.device)
        if extra_loss is None and cfg.robust is not None:
            extra_loss = make_robust_loss(cfg.robust, rank=dist.rank)
        trainer = Trainer(model, cfg, train_loader, val_loader, out_dir=out,
                          extra_loss=extra_loss, dist=dist)
        if resume_from is not None:
            trainer.resume(resume_from)
        elif trainer.logger is not None:  # a fresh run in a folder left by a run killed
            trainer.logger.truncate_after(0)  # before its first checkpoint: drop its logs
        if dist.is_main:
            save_config(cfg, out / "config.yaml")
            print(f"[fastfn train] {cfg.model} on {desc}; {len(train_loader)} batches/epoch "
                  f"per rank, world size {dist.world_size}, device {dist.device}, "
                  f"from step {trainer.step} to {cfg.steps}", flush=True)
        t0 = time.perf_counter()
        final = trainer.fit()
        seconds = time.perf_counter() - t0
        summary = {"model": cfg.model, "model_config": trainer.model_config,
                   "steps": trainer.step, "world_size": dist.world_size,
                   "train_seconds_this_session": seconds, "data": desc,
                   "final_val": final, "best_val_ssim": trainer.best_ssim,
                   "checkpoints": {"last": str(out / "last.pt"), "best": str(out / "best.pt")}}
        if dist.is_main:
            atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
        return summary
    finally:
        if trainer is not None:
            trainer.close()
        if own_dist:
            cleanup()


def init_weights(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Load ``cfg.init_from`` into ``model`` (fine-tuning a released or earlier model).

    Raises ValueError when the file holds another architecture than ``cfg.model`` with
    ``cfg.model_config``, naming the differing config keys (``fastfn.models.WeightsError``,
    with the key lists, when its weights do not fit at all).
    """
    path = Path(cfg.init_from)
    if not path.is_file():
        raise FileNotFoundError(f"init_from {path} does not exist")
    loaded = load_weights(cfg.model, path, cfg.model_config)
    want, got = _model_config(model, cfg), _model_config(loaded, cfg)
    if want != got:
        diff = ", ".join(f"{k}: file {got.get(k)!r} vs run {want.get(k)!r}"
                         for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k))
        raise ValueError(f"init_from {path} holds a {cfg.model!r} model with another config ({diff}); "
                         f"set the run's model_config to the file's")
    model.load_state_dict(loaded.state_dict(), strict=True)


def _model_config(model: torch.nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    c = getattr(model, "config", None)
    return dataclasses.asdict(c) if dataclasses.is_dataclass(c) else dict(cfg.model_config)


__all__ = ["run_training", "preflight", "check_out_dir", "CheckpointError"]
