"""Training configuration: nested dataclasses, loadable from YAML, overridable by flags.

Precedence (lowest first): dataclass defaults < YAML file < ``KEY=VALUE`` overrides
(dotted keys, e.g. ``optim.lr=3e-4``) < explicit CLI flags. Unknown keys and values
of the wrong type raise with the key named, so a typo in a YAML file is an error and
not a silently ignored setting.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastfn.configs import as_plain, from_plain
from fastfn.fileio import atomic_write_bytes
from fastfn.train.robust import LEGACY_KEYS, RobustConfig

OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine")
LOSSES = ("l1", "l2", "ssim")
AMP_MODES = ("auto", "none", "bf16", "fp16")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass
class OptimConfig:
    """Optimiser: ``name`` in adam | adamw | rmsprop."""
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw
    momentum: float = 0.0  # rmsprop
    eps: float = 1e-8


@dataclass
class SchedConfig:
    """LR schedule, stepped once per optimiser step.

    none: constant; step: multiply by ``gamma`` every ``step_size`` steps;
    cosine: cosine decay from ``optim.lr`` to ``min_lr`` over ``TrainConfig.steps``.
    """
    name: str = "none"
    step_size: int = 1000
    gamma: float = 0.1
    min_lr: float = 0.0


@dataclass
class DataConfig:
    """Where the slices come from and how they are undersampled.

    ``train``/``val``: folders of fastMRI ``.h5`` files. With ``train`` only, a
    folder holding ``train/`` and ``val/`` sub-folders is split that way, otherwise
    ``val_fraction`` of its volumes (chosen by file name, deterministically) are
    held out. With neither, the synthetic default data of ``fastfn.data`` is used
    (``default_data("train")`` / ``default_data("val")``), generated once into the
    cache with the ``synth_*`` settings.
    """
    train: str | None = None
    val: str | None = None
    mask: str = "random:4x@0.08"
    val_fraction: float = 0.2
    batch_size: int = 1
    val_batch_size: int | None = None  # None: same as batch_size
    num_workers: int = 0
    crop_size: int | None = None  # target/output crop; None: the data layer's default
    sample_rate: float = 1.0  # fraction of training volumes used
    synth_size: int = 320  # synthetic k-space matrix (square)
    synth_volumes: int | None = None  # synthetic training volumes; None: fastfn.data's default
    synth_val_volumes: int | None = None  # synthetic validation volumes; None: default
    synth_slices: int | None = None  # slices per synthetic volume; None: default
    synth_coils: int = 4  # coils of the synthetic data for multi-coil models (VarNet)


@dataclass
class TrainConfig:
    """Everything a training run needs; saved into every checkpoint as a plain dict."""
    model: str = "unet"
    model_config: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    loss: str = "l1"  # l1 | l2 | ssim (1 - SSIM with data range = the volume max)
    steps: int = 1000
    val_every: int = 200
    ckpt_every: int | None = None  # None: at every validation
    log_every: int = 10
    val_max_batches: int | None = None  # None: the whole validation set
    grad_clip: float | None = None  # max global grad norm; None: no clipping
    # > 0: validate, export and keep best.pt from an exponential moving average of the
    # weights, updated after every step with this decay (horizon ~ 1 / (1 - decay) steps)
    ema_decay: float = 0.0
    amp: str = "auto"  # auto: bf16 on CUDA when supported, off on CPU
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads (torch.set_num_threads); None: torch's default
    panels: int = 4  # validation slices drawn as PNG panels at each validation
    tensorboard: bool = True  # also log to TensorBoard when it is installed
    progress: bool = True  # tqdm progress bar
    robust: RobustConfig | None = None  # robust (FNAF) training; None: clean training
    init_from: str | None = None  # start from these weights (fastfn checkpoint, fastMRI or Lightning file)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the key whose value is out of range."""
        _choice("optim.name", self.optim.name, OPTIMIZERS)
        _choice("sched.name", self.sched.name, SCHEDULES)
        _choice("loss", self.loss, LOSSES)
        _choice("amp", self.amp, AMP_MODES)
        for key, value in (("steps", self.steps), ("val_every", self.val_every),
                           ("log_every", self.log_every), ("data.batch_size", self.data.batch_size),
                           ("sched.step_size", self.sched.step_size)):
            if value < 1:
                raise ValueError(f"config key {key!r} must be >= 1, got {value}")
        if self.ckpt_every is not None and self.ckpt_every < 1:
            raise ValueError(f"config key 'ckpt_every' must be >= 1, got {self.ckpt_every}")
        if self.optim.lr <= 0:
            raise ValueError(f"config key 'optim.lr' must be > 0, got {self.optim.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"config key 'ema_decay' must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"config key 'grad_clip' must be > 0 or null, got {self.grad_clip}")
        if not 0.0 <= self.data.val_fraction < 1.0:
            raise ValueError(f"config key 'data.val_fraction' must be in [0, 1), "
                             f"got {self.data.val_fraction}")
        if not 0.0 < self.data.sample_rate <= 1.0:
            raise ValueError(f"config key 'data.sample_rate' must be in (0, 1], "
                             f"got {self.data.sample_rate}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"config key 'threads' must be >= 1 or null, got {self.threads}")
        if self.data.num_workers < 0:
            raise ValueError(f"config key 'data.num_workers' must be >= 0, "
                             f"got {self.data.num_workers}")

    @property
    def checkpoint_every(self) -> int:
        return self.ckpt_every or self.val_every

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists): YAML- and weights_only-safe."""
        return as_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build from a nested dict; unknown keys raise KeyError naming ``source`` and key.
        Robust settings in the flat layout of older versions are migrated
        (:meth:`RobustConfig.migrate`)."""
        return from_plain(cls, d, source=source)

    def replace(self, overrides: dict[str, Any], *, source: str = "override") -> "TrainConfig":
        """A copy with dotted-key overrides applied, e.g. ``{"optim.lr": 3e-4}``."""
        d = self.to_dict()
        for key, value in overrides.items():
            set_dotted(d, key, value, source=source)
        return TrainConfig.from_dict(d, source=source)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None
                ) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any), then dotted ``overrides``."""
    d = TrainConfig().to_dict()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping at top level, "
                             f"got {type(loaded).__name__}")
        if isinstance(loaded.get("robust"), dict):
            loaded["robust"] = RobustConfig.migrate(loaded["robust"])
        _merge(d, loaded, source=str(path), prefix="")
    cfg = TrainConfig.from_dict(d, source=str(path) if path else "config")
    return cfg.replace(overrides, source="--set") if overrides else cfg


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    atomic_write_bytes(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 0.0003)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like KEY=VALUE (e.g. optim.lr=3e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"override {text!r}: value is not valid YAML: {e}") from e
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
    return key.strip(), value


def set_dotted(d: dict[str, Any], key: str, value: Any, *, source: str) -> None:
    """Set ``d["a"]["b"] = value`` for key ``"a.b"``; the path must exist except inside
    ``model_config`` (free-form: the model's own config dataclass checks it). Robust keys
    of the flat layout of older versions (``robust.pgd_steps``, ``robust.attack=pgd``) are
    set where they live now."""
    parts = key.split(".")
    if parts[0] == "robust":
        if d.get("robust") is None:
            d["robust"] = as_plain(RobustConfig())  # switched on by this key
        if len(parts) == 2 and parts[1] in LEGACY_KEYS:
            for path in LEGACY_KEYS[parts[1]]:
                set_dotted(d, f"robust.{path}", value, source=source)
            return
        if parts[1:] == ["attack"] and isinstance(value, str):
            parts = ["robust", "attack", "method"]
    node = d
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], dict):
            raise KeyError(f"{source}: unknown config key {'.'.join(parts[:i + 1])!r}")
        node = node[part]
    if parts[0] != "model_config" and parts[-1] not in node:
        raise KeyError(f"{source}: unknown config key {key!r}")
    node[parts[-1]] = value


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r} must be one of {', '.join(choices)}; got {value!r}")


def _merge(base: dict[str, Any], new: dict[str, Any], *, source: str, prefix: str) -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise KeyError(f"{source}: unknown config key {dotted!r}")
        if isinstance(base[key], dict) and isinstance(value, dict) and key != "model_config":
            _merge(base[key], value, source=source, prefix=f"{dotted}.")
        else:
            base[key] = value
