"""The models an evaluation compares, and where their weights come from.

A model is given as a fastfn checkpoint path (``fastfn.train.load_reconstructor``), a
:class:`WeightsFile` (fastMRI's released state dicts, Lightning checkpoints, bare state
dicts: ``fastfn.models.load_weights``), or a ``(name, reconstructor)`` pair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from fastfn.models import load_weights
from fastfn.train.checkpoint import load_reconstructor


@dataclass(frozen=True)
class WeightsFile:
    """Weights of a fastfn model ``model`` (or a released fastMRI name such as
    ``unet_knee_sc``) in a file, with config keys ``model_config`` on top of what the
    file and the name fix (see ``fastfn.models.load_weights``)."""
    path: str
    model: str
    model_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).stem


def load_model(source: Any, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One model in eval mode on ``device`` and what is known of its training (the
    checkpoint's meta: ``config``, ``model_name``, ``model_config``; a weights file: the
    model name and config only)."""
    if isinstance(source, WeightsFile):
        model = load_weights(source.model, source.path, dict(source.model_config), device=device)
        return model, {"model_name": model.model_name, "model_config": _config_dict(model), "config": {},
                       "step": None, "weights": source.path}
    model, meta = load_reconstructor(source, map_location=device)
    return model, meta


def load_models(models: Sequence[Any], names: Sequence[str] | None,
                device: torch.device) -> dict[str, torch.nn.Module]:
    """``{name: reconstructor}`` in eval mode on ``device``, in the order given.

    models: checkpoint paths, :class:`WeightsFile` s or ``(name, model)`` pairs. Names
    default to the checkpoint's parent folder and stem (``run/best``), the weights file's
    stem, or the pair's name; ``names`` overrides them; a repeated name gets ``#i``.
    """
    if names is not None and len(names) != len(models):
        raise ValueError(f"{len(names)} names given for {len(models)} models")
    loaded: dict[str, torch.nn.Module] = {}
    for i, m in enumerate(models):
        if isinstance(m, (str, Path, WeightsFile)):
            model, _ = load_model(m, device)
            if isinstance(m, WeightsFile):
                name = m.name
            else:
                name = f"{Path(m).parent.name}/{Path(m).stem}" if Path(m).parent.name else Path(m).stem
        else:
            name, model = m
        if names is not None:
            name = names[i]
        if name in loaded:
            name = f"{name}#{i}"
        loaded[name] = model.to(device).eval()
    if not loaded:
        raise ValueError("evaluation: no model given (pass at least one --ckpt or --weights)")
    return loaded


def _config_dict(model: torch.nn.Module) -> dict[str, Any]:
    import dataclasses
    cfg = getattr(model, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}
