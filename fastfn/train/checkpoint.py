"""Checkpoints: atomic writes, pickle-free loads, and rebuilding a reconstructor.

A checkpoint is a dict of tensors and primitive containers only, so it loads with
``torch.load(weights_only=True)`` (no arbitrary code runs on load):

==================  ==========================================================
key                 content
==================  ==========================================================
``format``          ``"fastfn-checkpoint"``; ``version``: int
``model_name``      the ``build_model`` name (``"unet"``, ``"cascade"``, ...)
``model_config``    dict of keyword arguments of ``build_model``
``model``           model ``state_dict`` (the bare module, never the DDP wrapper)
``optimizer``       optimiser ``state_dict`` (absent in weights-only exports)
``scheduler``       LR scheduler ``state_dict`` or None
``scaler``          ``GradScaler`` ``state_dict`` or None (fp16 on CUDA)
``rng``             RNG states as tensors: torch CPU, CUDA (list), numpy, python
``step``            optimiser steps done
``config``          the ``TrainConfig`` as a plain dict
``metrics``         the validation metrics at this step (dict of floats), or {}
``best_ssim``       best validation SSIM seen so far (float or None)
==================  ==========================================================
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastfn.fileio import atomic_write, to_plain

FORMAT = "fastfn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, or for another model/config."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Save ``state`` atomically: a crash mid-write leaves the old file (or none)."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu"
                    ) -> dict[str, Any]:
    """Load a fastfn checkpoint with ``weights_only=True``.

    Raises FileNotFoundError when ``path`` is missing and CheckpointError (a
    ValueError) when it is not a readable fastfn checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError,
            ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not a torch "
                              f"checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})"
                              ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a fastfn checkpoint "
                              f"(no format={FORMAT!r} key)")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {state['version']}; "
                              f"this fastfn reads up to {VERSION}")
    for key in ("model_name", "model_config", "model", "step"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks the key {key!r}")
    return state


def check_same_model(state: dict[str, Any], model_name: str, model_config: dict[str, Any],
                     path: str | Path) -> None:
    """Raise CheckpointError unless the checkpoint holds ``model_name`` with ``model_config``."""
    if state["model_name"] != model_name:
        raise CheckpointError(f"checkpoint {path} holds a {state['model_name']!r} model, "
                              f"not {model_name!r}")
    saved, wanted = to_plain(state["model_config"]), to_plain(model_config)
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise CheckpointError(
            f"checkpoint {path} holds a {model_name!r} model with another config: "
            + ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs requested {wanted.get(k)!r}"
                        for k in diff))


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                     path: str | Path) -> None:
    """``model.load_state_dict(strict=True)`` with the mismatch named in a CheckpointError."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model "
                              f"{type(model).__name__}: {e}") from e


def load_reconstructor(path: str | Path, map_location: str | torch.device = "cpu"
                       ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the reconstructor stored in a checkpoint, in eval mode, on ``map_location``.

    Returns ``(model, meta)`` with ``meta`` holding ``model_name``, ``model_config``,
    ``step``, ``config``, ``metrics`` and ``best_ssim`` of the checkpoint.
    """
    from fastfn.models import build_model

    state = load_checkpoint(path, map_location="cpu")
    try:
        model = build_model(state["model_name"], **state["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot build model {state['model_name']!r} "
                              f"with config {state['model_config']!r}: {e}") from e
    load_model_state(model, state["model"], path)
    model.to(map_location).eval()
    meta = {k: state.get(k) for k in ("model_name", "model_config", "step", "config",
                                      "metrics", "best_ssim")}
    return model, meta


def save_model(model: torch.nn.Module, path: str | Path, step: int = 0) -> None:
    """A checkpoint of a model made by ``fastfn.models.build_model``: its name, config and
    weights only (what :func:`load_reconstructor` rebuilds it from), written atomically."""
    from fastfn.models import model_spec
    name, config = model_spec(model)
    save_checkpoint({"format": FORMAT, "version": VERSION, "model_name": name, "model_config": config,
                     "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "step": step},
                    path)


def export_weights(src: str | Path, dst: str | Path) -> None:
    """Write a checkpoint without optimiser/scheduler/RNG state (for sharing a model)."""
    state = load_checkpoint(src)
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        state.pop(key, None)
    save_checkpoint(state, dst)


# --- RNG state as tensors (weights_only-safe) ---------------------------------------

def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and ints."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal,
                                                                          dtype=torch.int64),
                   "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured (CUDA states only when CUDA is in use)."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))

