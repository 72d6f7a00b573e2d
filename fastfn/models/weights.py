"""Weights for fastfn's own models from the files people have.

    model = load_weights("unet", "knee_sc_leaderboard_state_dict.pt", released_config("unet_knee_sc"))
    model = load_weights("varnet_knee_mc", "knee_leaderboard_state_dict.pt")   # released name
    model = load_weights("varnet", "epoch=49-step=1000.ckpt")                  # Lightning
    model = load_weights("unet", "runs/robust/best.pt")                        # fastfn checkpoint

Files read (always with ``torch.load(weights_only=True)``: no code in the file runs):

- a bare ``state_dict``: fastMRI's released ``*_leaderboard_state_dict.pt`` files
  (``fastmri.models.Unet`` / ``VarNet`` parameter names), or a fastfn model's own;
  a ``module.`` prefix of a DistributedDataParallel wrapper is removed;
- a PyTorch Lightning checkpoint: a dict with ``state_dict`` whose keys carry the
  LightningModule's attribute prefix (fastMRI's ``UnetModule``: ``unet.``,
  ``VarNetModule``: ``varnet.``); entries outside that prefix (loss buffers, metric
  states) belong to the training module, not the network, and are not loaded;
- a fastfn checkpoint (written by ``fastfn.train``): its ``model_name``,
  ``model_config`` and ``model`` fields are read here directly.

fastMRI's names and fastfn's differ in two places only: fastfn's U-Net reconstructor
holds fastMRI's ``Unet`` as ``.module`` (so its keys gain ``module.``), and a VarNet
cascade's ``dc_weight`` is a 1-element vector in fastMRI and a scalar in fastfn.

Every parameter and buffer of the model must come from the file, with its shape;
otherwise :class:`WeightsError` names the missing, unexpected and differently shaped
keys and the model name and config that were tried. Nothing is loaded partially.
"""
from __future__ import annotations

import dataclasses
import pathlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from fastfn.models.registry import MODEL_NAMES, build_model, make_config
from fastfn.models.base import Reconstructor

__all__ = ["WeightsError", "RELEASED", "released_config", "read_weights", "infer_config",
           "fastfn_state_dict", "to_fastmri_state_dict", "load_weights"]

#: The ``format`` field of the checkpoints fastfn.train writes (its ``FORMAT``); the
#: models layer reads those files without importing the training layer.
FASTFN_CHECKPOINT_FORMAT = "fastfn-checkpoint"

WeightsSource = Union[str, Path, Mapping[str, Any]]

_UNET_RELEASED = dict(chans=256, num_pool_layers=4, drop_prob=0.0)
_VARNET_RELEASED = dict(num_cascades=12, chans=18, pools=4, sens_chans=8, sens_pools=4)

#: fastMRI's released models (fastmri_examples/{unet,varnet}/run_pretrained_*_inference.py):
#: name -> (fastfn model name, fastfn config keys, file name under
#: https://dl.fbaipublicfiles.com/fastMRI/trained_models/{unet,varnet}/).
RELEASED: Dict[str, Tuple[str, Dict[str, Any], str]] = {
    "unet_knee_sc": ("unet", dict(_UNET_RELEASED, multicoil=False), "knee_sc_leaderboard_state_dict.pt"),
    "unet_knee_mc": ("unet", dict(_UNET_RELEASED, multicoil=True), "knee_mc_leaderboard_state_dict.pt"),
    "unet_brain_mc": ("unet", dict(_UNET_RELEASED, multicoil=True), "brain_leaderboard_state_dict.pt"),
    "varnet_knee_mc": ("varnet", dict(_VARNET_RELEASED), "knee_leaderboard_state_dict.pt"),
    "varnet_brain_mc": ("varnet", dict(_VARNET_RELEASED), "brain_leaderboard_state_dict.pt"),
}

# Path objects are the one kind of non-tensor value Lightning's hyper-parameters commonly
# hold; rebuilding one runs no code of the file's choosing.
_SAFE_GLOBALS = [pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath,
                 pathlib.PureWindowsPath]


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the requested model."""


def released_config(name: str):
    """The fastfn config dataclass of fastMRI's released model ``name``.

    ``unet_knee_sc``: UnetConfig(chans=256, num_pool_layers=4, drop_prob=0.0);
    ``unet_knee_mc`` / ``unet_brain_mc``: the same with multicoil=True (RSS input);
    ``varnet_knee_mc`` / ``varnet_brain_mc``: VarNetConfig(num_cascades=12, chans=18,
    pools=4, sens_chans=8, sens_pools=4). The dataclass's type names the model
    (``build_model("unet", **asdict(cfg))``).
    """

    if name not in RELEASED:
        raise ValueError(f"unknown released model {name!r}; choose one of {', '.join(RELEASED)}")
    model_name, config, _ = RELEASED[name]
    return make_config(model_name, **config)


# --------------------------------------------------------------------------- reading files

def read_weights(source: WeightsSource) -> Tuple[str, Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a weights file (or an object already loaded) into ``(kind, state_dict, meta)``.

    ``kind`` is ``"state_dict"``, ``"lightning"`` or ``"fastfn"``; ``meta`` holds a fastfn
    checkpoint's ``model_name`` and ``model_config`` (empty otherwise). Raises
    FileNotFoundError for a missing path and WeightsError for anything else unusable.
    """
    where = _where(source)
    obj = _load(source) if isinstance(source, (str, Path)) else source
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where}: expected a state_dict, a Lightning checkpoint or a fastfn "
                           f"checkpoint (a dict), found {type(obj).__name__}")
    if obj.get("format") == FASTFN_CHECKPOINT_FORMAT:
        return ("fastfn", *_fastfn_checkpoint_fields(obj, where))
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return "lightning", _tensors(obj["state_dict"], where), {}
    return "state_dict", _tensors(obj, where), {}


def _where(source: WeightsSource) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the given state_dict"


def _load(path: Union[str, Path]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if blocked is None:
            raise WeightsError(f"{path} is corrupt, truncated or not a torch file "
                               f"({_error_line(e)})") from e
        raise WeightsError(
            f"{path}: torch.load(weights_only=True) refused the file: it holds Python objects "
            f"besides tensors (e.g. {blocked.group(1)}). If you trust the file, load it yourself "
            "and pass its state_dict (torch.load(path, weights_only=False)['state_dict']) to "
            "load_weights") from e
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is corrupt, truncated or not a torch file "
                           f"({_error_line(e)})") from e


def _error_line(e: Exception) -> str:
    """The informative line of torch.load's error (its unpickler's reason when it gives one)."""
    text = str(e)
    reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(e).__name__}: " + (reason.group(1).strip() if reason else lines[0] if lines else "")


def _tensors(state: Mapping[str, Any], where: str) -> Dict[str, torch.Tensor]:
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not state:
        raise WeightsError(
            f"{where}: not a state_dict (a dict of tensors): "
            + (f"{len(not_tensors)} entries are not tensors, e.g. {_first(not_tensors)}"
               if not_tensors else "it is empty"))
    return {str(k): v for k, v in state.items()}


def _fastfn_checkpoint_fields(state: Mapping[str, Any], where: str
                              ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The model fields of a fastfn checkpoint (see fastfn.train.checkpoint for the format)."""
    missing = [k for k in ("model_name", "model_config", "model") if k not in state]
    if missing:
        raise WeightsError(f"{where}: fastfn checkpoint without {missing}")
    meta = {"model_name": state["model_name"], "model_config": dict(state["model_config"])}
    return _tensors(state["model"], where), meta


# --------------------------------------------------------------------------- names and configs

_UNET_PREFIX = "module."


def fastfn_state_dict(model_name: str, state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """fastMRI's parameter names and shapes -> fastfn's, for ``model_name``.

    unet: ``down_sample_layers.0.layers.0.weight`` -> ``module.down_sample_layers...``
    (keys already under ``module.`` stay); varnet: each ``cascades.N.dc_weight`` of
    shape (1,) becomes a scalar. Other names are the same in both and kept.
    """
    out = dict(state)
    if model_name == "unet" and not any(k.startswith(_UNET_PREFIX) for k in out):
        out = {_UNET_PREFIX + k: v for k, v in out.items()}
    if model_name == "varnet":
        out = {k: (v.reshape(()) if k.endswith(".dc_weight") and v.numel() == 1 else v)
               for k, v in out.items()}
    return out


def to_fastmri_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A fastfn U-Net reconstructor's or VarNet's state_dict under fastMRI's names.

    ``fastmri.models.Unet(1, 1, chans, num_pool_layers).load_state_dict`` /
    ``fastmri.models.VarNet(...).load_state_dict`` take the result (strict).
    """
    from fastfn.models.unet import UnetReconstructor
    from fastfn.models.varnet import VarNet

    state = model.state_dict()
    if isinstance(model, UnetReconstructor):
        return {k[len(_UNET_PREFIX):]: v for k, v in state.items()}
    if isinstance(model, VarNet):
        return {k: (v.reshape(1) if k.endswith(".dc_weight") else v) for k, v in state.items()}
    raise TypeError(f"to_fastmri_state_dict: expected fastfn's UnetReconstructor or VarNet, "
                    f"got {type(model).__name__}")


def _unet_levels(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, int]:
    """chans and pool levels of a (fastMRI-layout) U-Net whose keys start with ``prefix``."""
    pattern = re.compile(re.escape(prefix) + r"down_sample_layers\.(\d+)\.layers\.0\.weight$")
    levels = sorted(int(m.group(1)) for k in state if (m := pattern.match(k)))
    first = state.get(f"{prefix}down_sample_layers.0.layers.0.weight")
    if not levels or first is None or first.dim() != 4:
        return {}
    return {"chans": int(first.shape[0]), "pools": levels[-1] + 1}


def infer_config(model_name: str, state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """The config keys of ``model_name`` that a fastfn-named state_dict determines.

    unet: ``chans``, ``num_pool_layers`` (not ``multicoil`` or ``drop_prob``: they leave
    no trace in the weights); varnet: ``num_cascades``, ``chans``, ``pools``,
    ``sens_chans``, ``sens_pools``; other models: nothing.
    """
    config: Dict[str, Any] = {}
    if model_name == "unet":
        unet = _unet_levels(state, _UNET_PREFIX)
        if unet:
            config = {"chans": unet["chans"], "num_pool_layers": unet["pools"]}
    elif model_name == "varnet":
        cascades = sorted({int(m.group(1)) for k in state if (m := re.match(r"cascades\.(\d+)\.", k))})
        if cascades:
            config["num_cascades"] = cascades[-1] + 1
        config.update(_unet_levels(state, "cascades.0.model.unet."))
        sens = _unet_levels(state, "sens_net.norm_unet.unet.")
        if sens:
            config.update(sens_chans=sens["chans"], sens_pools=sens["pools"])
    return config


# --------------------------------------------------------------------------- loading

def _views(kind: str, state: Dict[str, torch.Tensor]
           ) -> Iterator[Tuple[str, Dict[str, torch.Tensor], List[str]]]:
    """Readings of the stored keys: as stored, and with one leading prefix removed.

    Yields (description, state, keys left out). A bare state_dict's prefix must cover
    every key (a DDP wrapper's ``module.``); a Lightning checkpoint's may leave out
    the training module's other entries.
    """
    yield "keys as stored", state, []
    for prefix in sorted({k.split(".", 1)[0] + "." for k in state if "." in k}):
        inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        outside = [k for k in state if not k.startswith(prefix)]
        if outside and kind != "lightning":
            continue
        yield f"prefix {prefix!r} removed", inside, outside


def _first(keys: List[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _meta_shapes(model_name: str, config) -> Dict[str, Tuple[int, ...]]:
    """Parameter and buffer shapes of the model, built on the meta device (no memory)."""

    with torch.device("meta"):
        model = build_model(model_name, **dataclasses.asdict(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_weights(model_name: str, source: WeightsSource,
                 model_config: Optional[Union[Mapping[str, Any], Any]] = None, *,
                 device: Union[str, torch.device] = "cpu") -> Reconstructor:
    """fastfn model ``model_name`` with the weights of ``source``, in eval mode on ``device``.

    Args:
        model_name: a fastfn model name (``"unet"``, ``"varnet"``, ``"cascade"``) or a
            released fastMRI name (:data:`RELEASED`, e.g. ``"unet_knee_sc"``), which
            fixes the config to the released architecture.
        source: a path to a bare state_dict, a Lightning ``.ckpt`` or a fastfn
            checkpoint, or such an object already loaded.
        model_config: config keys (a dict or a config dataclass) that override the
            config. Otherwise the config is a released name's, a fastfn checkpoint's
            stored one, or, for a bare state_dict or Lightning checkpoint, fastfn's
            defaults with the architecture read off the weights (:func:`infer_config`);
            ``multicoil`` of a U-Net leaves no trace in the weights and is False
            unless given.
        device: where the returned model lives.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        WeightsError: the file is unreadable or its weights do not fit the model (the
            message lists missing, unexpected and differently shaped keys, first few
            of each with counts, and the model name and config tried).
    """

    where = _where(source)
    overrides = _as_dict(model_config)
    base: Optional[Dict[str, Any]] = None
    name = model_name
    if model_name in RELEASED:
        name, released, _ = RELEASED[model_name]
        base = dict(released)
    elif model_name not in MODEL_NAMES:
        raise ValueError(f"load_weights: unknown model {model_name!r}; choose one of "
                         f"{', '.join(MODEL_NAMES + tuple(RELEASED))}")
    kind, state, meta = read_weights(source)
    if kind == "fastfn":
        if meta["model_name"] != name:
            raise WeightsError(f"{where}: fastfn checkpoint of a {meta['model_name']!r} model, "
                               f"not {name!r}")
        base = {**meta["model_config"], **(base or {})}

    tried = []
    for desc, view, left_out in _views(kind, state):
        view = fastfn_state_dict(name, view)
        config_keys = {**(base if base is not None else infer_config(name, view)), **overrides}
        try:
            config = make_config(name, **config_keys)
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{where}: cannot configure model {name!r} with {config_keys}: {e}") from e
        expected = _meta_shapes(name, config)
        score = sum(k in expected and tuple(v.shape) == expected[k] for k, v in view.items())
        tried.append((score, desc, view, left_out, config, expected))
    score, desc, view, left_out, config, expected = max(tried, key=lambda t: t[0])

    missing = [k for k in expected if k not in view]
    unexpected = [k for k in view if k not in expected]
    reshaped = [f"{k}: file {tuple(view[k].shape)} vs model {expected[k]}"
                for k in expected if k in view and tuple(view[k].shape) != expected[k]]
    if missing or unexpected or reshaped:
        kinds = {"state_dict": "bare state_dict", "lightning": "Lightning checkpoint",
                 "fastfn": "fastfn checkpoint"}
        parts = [f"{len(missing)} missing keys" + (f" ({_first(missing)})" if missing else ""),
                 f"{len(unexpected)} unexpected keys" + (f" ({_first(unexpected)})" if unexpected else ""),
                 f"{len(reshaped)} keys with other shapes" + (f" ({_first(reshaped, 3)})" if reshaped else "")]
        if left_out:
            parts.append(f"{len(left_out)} entries outside the prefix not considered ({_first(left_out)})")
        raise WeightsError(
            f"{where} ({kinds[kind]}, {desc}, keys mapped to fastfn's names) does not fit "
            f"fastfn model {name!r} with config {dataclasses.asdict(config)}: " + "; ".join(parts))

    model = build_model(name, **dataclasses.asdict(config))
    model.load_state_dict(view, strict=True)
    return model.to(device).eval()


def _as_dict(config: Optional[Union[Mapping[str, Any], Any]]) -> Dict[str, Any]:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"load_weights: model_config must be a dict or a config dataclass, "
                    f"got {type(config).__name__}")
