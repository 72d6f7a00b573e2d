"""The models an evaluation compares: checkpoints or (name, reconstructor) pairs, named."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from fastfn.train.checkpoint import load_reconstructor


def load_models(models: Sequence[Any], names: Sequence[str] | None,
                device: torch.device) -> dict[str, torch.nn.Module]:
    """``{name: reconstructor}`` in eval mode on ``device``, in the order given.

    models: checkpoint paths (``fastfn.train.load_reconstructor``) or ``(name, model)``
    pairs. Names default to the checkpoint's parent folder and stem (``run/best``) or the
    pair's name; ``names`` overrides them; a repeated name gets ``#i`` appended.
    """
    if names is not None and len(names) != len(models):
        raise ValueError(f"{len(names)} names given for {len(models)} models")
    loaded: dict[str, torch.nn.Module] = {}
    for i, m in enumerate(models):
        if isinstance(m, (str, Path)):
            model, _ = load_reconstructor(m, map_location=device)
            name = f"{Path(m).parent.name}/{Path(m).stem}" if Path(m).parent.name else Path(m).stem
        else:
            name, model = m
        if names is not None:
            name = names[i]
        if name in loaded:
            name = f"{name}#{i}"
        loaded[name] = model.to(device).eval()
    if not loaded:
        raise ValueError("evaluation: no model given (pass at least one --ckpt)")
    return loaded
