"""The one training loop of fastfn: clean training, and robust training through ``extra_loss``.

Each step: the reconstructor maps ``masked_kspace``/``mask`` to an image at the
target's size, the image loss (L1 or SSIM) against ``target`` is computed, the
optional ``extra_loss(model, batch, step) -> (loss, logs)`` is added, and one
optimiser step is taken (with gradient clipping, AMP on CUDA, the LR schedule).
Every ``val_every`` steps the model is evaluated (fastMRI metrics, zero-filled
baseline), ``best.pt`` is kept by validation SSIM, and ``last.pt`` is written every
``ckpt_every`` steps, so a killed run resumed from ``last.pt`` loses at most the
steps since then. Under DDP (see ``fastfn.train.distributed``) every rank runs the
same loop on its shard; only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fastfn.losses import build_loss
from fastfn.train import checkpoint as ckpt
from fastfn.train.config import TrainConfig
from fastfn.train.distributed import DistInfo, all_reduce_mean, resolve_device, wrap_model
from fastfn.train.evaluate import EvalResult, evaluate
from fastfn.train.logging import MetricsLogger, save_panel

Batch = Mapping[str, Any]
#: The trainer hook of robust training (docs/ARCHITECTURE.md): ``fn(model, batch, step)
#: -> (loss, logs)``; see ``Trainer``'s ``extra_loss`` for what it receives and returns.
ExtraLoss = Callable[[nn.Module, Batch, int], "tuple[torch.Tensor, Mapping[str, Any]]"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed torch (CPU and CUDA), numpy and random; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam / AdamW / RMSprop from ``cfg.optim``."""
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps,
                                weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps,
                                 weight_decay=o.weight_decay)
    return torch.optim.RMSprop(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay,
                               momentum=o.momentum)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    """StepLR / CosineAnnealingLR (over ``cfg.steps``) / None, stepped once per step."""
    s = cfg.sched
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=s.min_lr)
    return None


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``mode`` on ``device``: None (off) on CPU and for ``none``."""
    if device.type != "cuda" or mode == "none":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


class Trainer:
    """Train a Reconstructor.

    Args:
        model: a ``fastfn.models.Reconstructor`` (``model(masked_kspace, mask,
            crop_size) -> (B, h, w)``), not yet DDP-wrapped.
        config: the run's ``TrainConfig``.
        train_data: iterable of batch dicts (fastfn.data collate); re-iterated per
            epoch. A DataLoader built by ``fastfn.train.data.make_loader`` resumes
            mid-epoch exactly; other iterables are fast-forwarded by skipping batches.
        val_data: iterable of batch dicts for validation, or None (no validation).
        out_dir: run folder for checkpoints, logs and panels (rank 0 writes); None:
            write nothing.
        extra_loss: ``fn(model, batch, step) -> (loss, logs)``, added to the clean
            loss each step (robust training). ``model`` is the bare module (not the
            DDP wrapper) in train mode; ``batch`` is on the training device;
            ``loss`` a scalar tensor that is part of the autograd graph; ``logs`` a
            dict of floats/scalar tensors, logged with the prefix ``extra/``. It must
            not call ``backward()`` itself (``torch.autograd.grad`` w.r.t. inputs is
            fine): the trainer does one backward of the total loss. If it has an
            attribute ``combine_gradients(clean_grads, extra_grads) -> (grads, logs)``
            (``RobustConfig.gradient_projection``/``gradient_ratio``), the trainer
            backpropagates the two terms separately, averages each over DDP ranks and
            steps with the combiner's gradients.
        dist: this process's ``DistInfo`` (default: single process on config.device).
        model_name, model_config: what ``build_model`` needs to rebuild the model
            from a checkpoint; default: the model's ``model_name``/``config`` set by
            ``build_model``, else ``config.model``/``config.model_config``.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_data: Iterable[Batch],
                 val_data: Iterable[Batch] | None = None, *, out_dir: str | Path | None = None,
                 extra_loss: ExtraLoss | None = None, dist: DistInfo | None = None,
                 model_name: str | None = None, model_config: Mapping[str, Any] | None = None
                 ) -> None:
        self.cfg = config
        self.dist = dist or DistInfo(device=resolve_device(config.device))
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.ddp_model = wrap_model(self.model, self.dist)
        self.train_data = train_data
        self.val_data = val_data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.extra_loss = extra_loss
        self.model_name = model_name or getattr(model, "model_name", None) or config.model
        cfg_obj = getattr(model, "config", None)
        if model_config is not None:
            self.model_config = dict(model_config)
        elif cfg_obj is not None and dataclasses.is_dataclass(cfg_obj):
            self.model_config = ckpt.to_plain(dataclasses.asdict(cfg_obj))
        else:
            self.model_config = dict(config.model_config)
        self.optimizer = build_optimizer(self.model.parameters(), config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.amp = amp_dtype(config.amp, self.device)
        if config.amp not in ("auto", "none") and self.amp is None:
            warnings.warn(f"amp={config.amp!r} ignored on {self.device}: mixed precision "
                          f"runs on CUDA only")
        self.loss_fn = build_loss(config.loss)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp is torch.float16 else None
        self.ema = (torch.optim.swa_utils.AveragedModel(
            self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay),
            use_buffers=True) if config.ema_decay > 0 else None)
        self.step = 0
        self.best_ssim: float | None = None
        self.last_val: dict[str, float] = {}
        self.logger = (MetricsLogger(self.out_dir, tensorboard=config.tensorboard)
                       if self.out_dir is not None and self.dist.is_main else None)

    # --- checkpoints ------------------------------------------------------------------

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and exported: the EMA when ``ema_decay`` > 0."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run (see ``fastfn.train.checkpoint``).
        ``model`` holds the exported weights (the EMA's with ``ema_decay`` > 0; then the
        trained weights are ``train_model`` and the EMA's update count ``ema_updates``)."""
        ema = {} if self.ema is None else {"train_model": self.model.state_dict(),
                                           "ema_updates": int(self.ema.n_averaged)}
        return {
            "format": ckpt.FORMAT, "version": ckpt.VERSION,
            "model_name": self.model_name, "model_config": self.model_config,
            "model": self.eval_model.state_dict(), **ema,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": ckpt.rng_state(),
            "step": self.step, "config": self.cfg.to_dict(),
            "metrics": dict(self.last_val), "best_ssim": self.best_ssim,
        }

    def save(self, name: str) -> Path | None:
        """Write ``out_dir/name`` atomically (rank 0 only); returns its path."""
        if self.out_dir is None or not self.dist.is_main:
            return None
        path = self.out_dir / name
        ckpt.save_checkpoint(self.state_dict(), path)
        return path

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint of this model and config: weights, optimiser,
        scheduler, scaler, RNG states, step and best SSIM. Raises CheckpointError for
        a checkpoint of another model/config (nothing is modified then)."""
        state = ckpt.load_checkpoint(path, map_location="cpu")
        ckpt.check_same_model(state, self.model_name, self.model_config, path)
        for key in ("optimizer", "rng"):
            if key not in state:
                raise ckpt.CheckpointError(f"checkpoint {path} has no {key!r} state (a "
                                           f"weights-only export?); cannot resume from it")
        ckpt.load_model_state(self.model, state.get("train_model", state["model"]), path)
        if self.ema is not None:
            # a checkpoint without an EMA (ema_decay switched on now) starts one at its weights
            ckpt.load_model_state(self.ema.module, state["model"], path)
            self.ema.n_averaged.fill_(int(state.get("ema_updates", 0)))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise ckpt.CheckpointError(f"checkpoint {path}: optimiser state does not fit "
                                       f"optimizer {self.cfg.optim.name!r}: {e}") from e
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best_ssim = state.get("best_ssim")
        self.last_val = dict(state.get("metrics") or {})
        if self.logger is not None:
            self.logger.truncate_after(self.step)

    # --- one step ---------------------------------------------------------------------

    def _to_device(self, batch: Batch) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on ``batch``; returns the logged values of this step."""
        batch = self._to_device(batch)
        target = batch["target"]
        if target.numel() == 0:
            raise ValueError(f"training needs targets; file {batch['fname'][0]} has none")
        self.ddp_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        combine = getattr(self.extra_loss, "combine_gradients", None)
        # with a gradient combiner the trainer averages the gradients over ranks itself
        sync_off = (self.ddp_model.no_sync() if combine is not None and self.ddp_model is not self.model
                    else contextlib.nullcontext())
        with sync_off, torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16,
                                      enabled=self.amp is not None):
            pred = self.ddp_model(batch["masked_kspace"], batch["mask"],
                                  crop_size=tuple(target.shape[-2:]))
            clean = self.loss_fn(pred.float(), target.float(), batch["max"].float())
            loss, extra = clean, None
            logs: dict[str, float] = {"loss_clean": float(clean.detach())}
            if self.extra_loss is not None:
                extra, extra_logs = self.extra_loss(self.model, batch, self.step)
                loss = clean + extra
                logs["loss_extra"] = float(extra.detach())
                logs.update({f"extra/{k}": float(v) for k, v in extra_logs.items()})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step + 1}")
        scale = self.scaler.scale if self.scaler is not None else (lambda x: x)
        if combine is None:
            scale(loss).backward()
        else:
            logs.update(self._combined_backward(scale(clean), scale(extra), combine))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            logs["grad_norm"] = float(norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        logs["loss"] = float(all_reduce_mean(loss.detach(), self.dist))
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        return logs

    def _combined_backward(self, clean: torch.Tensor, extra: torch.Tensor,
                           combine: Callable[..., tuple[list[torch.Tensor | None], Mapping[str, float]]]
                           ) -> dict[str, float]:
        """Set the parameters' ``.grad`` to ``combine(grad clean, grad extra)``, each
        gradient averaged over DDP ranks first (the forward ran under ``no_sync``)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        clean_grads = self._rank_mean(torch.autograd.grad(clean, params, allow_unused=True), params)
        if extra.requires_grad:
            extra_grads = self._rank_mean(torch.autograd.grad(extra, params, allow_unused=True), params)
        else:  # a clean step of a robust run (before its start step): same log columns
            extra_grads = [None] * len(params)
        grads, logs = combine(clean_grads, extra_grads)
        for p, g in zip(params, grads):
            p.grad = g
        return {f"extra/{k}": float(v) for k, v in logs.items()}

    def _rank_mean(self, grads: Iterable[torch.Tensor | None], params: list[nn.Parameter]
                   ) -> list[torch.Tensor | None]:
        """``grads`` of ``params`` averaged over ranks in one flat all-reduce (unchanged
        single-process). A parameter without a gradient on one rank counts as zero there."""
        grads = list(grads)
        if not self.dist.distributed:
            return grads
        full = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        flat = torch.cat([g.reshape(-1) for g in full])
        torch.distributed.all_reduce(flat)
        flat /= self.dist.world_size
        return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in params]), params)]

    # --- validation -------------------------------------------------------------------

    def validate(self) -> EvalResult | None:
        """Evaluate on ``val_data``; log, draw panels, keep ``best.pt`` by SSIM (rank 0)."""
        if self.val_data is None:
            return None
        result = evaluate(self.eval_model, self.val_data, self.device,
                          max_batches=self.cfg.val_max_batches,
                          keep_panels=self.cfg.panels if self.dist.is_main else 0,
                          dist=self.dist, autocast_dtype=self.amp)
        self.last_val = {**result.mean, **{f"zf_{k}": v for k, v in result.zero_filled_mean.items()}}
        improved = self.best_ssim is None or result.mean["ssim"] > self.best_ssim
        if improved:
            self.best_ssim = result.mean["ssim"]
        if self.logger is not None:
            self.logger.log("val", self.step, {**self.last_val, "best_ssim": self.best_ssim})
            folder = self.out_dir / "panels" / f"step_{self.step:07d}"
            for p in result.panels:
                save_panel(folder / f"{Path(p['fname']).stem}_s{p['slice']:03d}.png",
                           p["target"], p["zero_filled"], p["recon"],
                           title=f"{p['fname']} slice {p['slice']} (step {self.step})")
        if improved:
            self.save("best.pt")
        return result

    # --- the loop ---------------------------------------------------------------------

    def _batches(self) -> Iterator[Batch]:
        """Endless batches, starting where step ``self.step`` left off."""
        n = _num_batches(self.train_data)
        epoch, offset = divmod(self.step, n) if n else (0, 0)
        while True:
            sampler = getattr(self.train_data, "batch_sampler", None)
            resumable = hasattr(sampler, "set_position")
            if resumable:
                sampler.set_position(epoch, offset)
            elif hasattr(getattr(self.train_data, "sampler", None), "set_epoch"):
                self.train_data.sampler.set_epoch(epoch)
            # Creating a DataLoader iterator draws a seed from the global RNG unless the
            # loader has its own generator; fork so resumed and uninterrupted runs agree.
            with torch.random.fork_rng(devices=[]):
                it = iter(self.train_data)
            seen = 0
            for i, batch in enumerate(it):
                if not resumable and i < offset:
                    continue
                seen += 1
                yield batch
            if seen == 0 and offset == 0:
                raise ValueError("the training data yielded no batch (empty dataset, or "
                                 "fewer slices than one batch with drop_last)")
            epoch, offset = epoch + 1, 0

    def fit(self, until: int | None = None) -> dict[str, float]:
        """Train until step ``until`` (default ``config.steps``); returns the last
        validation means. Stopping before ``config.steps`` leaves the run resumable."""
        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        cfg = self.cfg
        bar = None
        if cfg.progress and self.dist.is_main:
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step",
                       dynamic_ncols=True)
        t0, done_since, batches = time.perf_counter(), 0, self._batches()
        try:
            while self.step < until:
                batch = next(batches)
                logs = self.train_step(batch)
                done_since += _batch_size(batch) * self.dist.world_size
                if bar is not None:
                    rate = done_since / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{logs['loss']:.4g}", slices_s=f"{rate:.1f}")
                    bar.update(1)
                if self.logger is not None and (self.step % cfg.log_every == 0
                                                or self.step == until):
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    self.logger.log("train", self.step,
                                    {**logs, "slices_per_s": done_since / elapsed})
                final = self.step == cfg.steps
                if self.step % cfg.val_every == 0 or final:
                    self.validate()
                if self.step % cfg.checkpoint_every == 0 or final:
                    self.save("last.pt")
        finally:
            if bar is not None:
                bar.close()
        return dict(self.last_val)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


def _num_batches(data: Iterable[Batch]) -> int:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return 0


def _batch_size(batch: Batch) -> int:
    t = batch.get("target")
    return int(t.shape[0]) if isinstance(t, torch.Tensor) else 1


__all__ = ["Trainer", "ExtraLoss", "Batch", "seed_everything", "build_optimizer",
           "build_scheduler", "amp_dtype"]
