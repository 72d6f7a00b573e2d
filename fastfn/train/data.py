"""Data loaders for training: resumable mid-epoch, deterministic per epoch.

``make_loader`` wraps any map-style dataset of slices (yielding fastfn sample dicts)
and any sampler into a DataLoader whose batch order is a pure function of
(seed, epoch): the trainer tells its ``ResumableBatchSampler`` which epoch and batch
it is at, so a resumed run sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fastfn.seeding import derive_seed, seeded_generator

if TYPE_CHECKING:
    from fastfn.train.config import DataConfig


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``seed + epoch`` (``set_epoch``), or
    ``range(n)`` in order when ``shuffle`` is False."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = seeded_generator(derive_seed(self.epoch, (self.seed, 1)))  # the epoch is the base stream
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of ``sampler``'s indices; ``set_position(epoch, k)`` makes the next
    iteration that epoch's order (``sampler.set_epoch``) starting at batch ``k``."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = False,
                 epoch_hooks: Sequence[Callable[[int], None]] = ()) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.epoch_hooks = list(epoch_hooks)
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Next iteration: epoch ``epoch`` (sampler and hooks told), from batch ``start``."""
        self.epoch, self.start = epoch, start
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        for hook in self.epoch_hooks:
            hook(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        batches = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        start, self.start = self.start, 0
        return iter(batches[start:])

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def make_loader(dataset: Dataset, batch_size: int, *, sampler: Sampler[int] | None = None,
                shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                collate_fn: Callable[[Sequence[Any]], Any] | None = None,
                drop_last: bool = False, pin_memory: bool = False,
                epoch_hooks: Sequence[Callable[[int], None]] = ()) -> DataLoader:
    """A DataLoader over ``dataset`` with a ``ResumableBatchSampler``.

    sampler: e.g. fastfn.data's volume-aware distributed sampler (needs
    ``set_epoch``); default an ``EpochShuffleSampler(len(dataset), seed, shuffle)``.
    ``epoch_hooks`` are called with the epoch number before each epoch (e.g. the
    training transform's ``set_epoch``; with worker processes the dataset is copied to
    them when the epoch's iterator starts, so the new epoch reaches them too). The
    loader's own generator seeds worker processes, so creating iterators does not
    consume the global RNG.
    """
    sampler = sampler if sampler is not None else EpochShuffleSampler(len(dataset), seed, shuffle)
    batches = ResumableBatchSampler(sampler, batch_size, drop_last, epoch_hooks)
    return DataLoader(dataset, batch_sampler=batches,
                      num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False)


# --- fastMRI data (fastfn.data) -> training/validation datasets ------------------------

class EpochMaskTransform:
    """Training transform: a fresh mask per slice and epoch, reproducibly.

    Wraps a ``fastfn.data.KspaceTransform`` built with ``use_seed=False`` and reseeds
    its mask function's RNG from ``(seed, epoch, slice, *volume_seed(fname))`` before
    each call, so the masks vary per slice and epoch (augmentation, as fastMRI's
    training does) but do not depend on worker processes or on where a run resumed.
    """

    def __init__(self, base: Any, seed: int = 0) -> None:
        self.base, self.seed, self.epoch = base, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, kspace, mask, target, attrs, fname, slice_num):
        from fastfn.data import volume_seed
        self.base.mask_func.rng.seed((self.seed % 2**32, self.epoch, int(slice_num),
                                      *volume_seed(str(fname))))
        return self.base(kspace, mask, target, attrs, fname, slice_num)


def _h5_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".h5", ".hdf5") and p.is_file())


def resolve_data_folders(cfg: "DataConfig", multicoil: bool
                         ) -> tuple[list[Path] | Path, list[Path] | Path, str]:
    """(train source, val source, description) from the data config.

    Raises FileNotFoundError for a missing folder and ValueError for a folder with
    no ``.h5`` files or too few volumes to hold some out for validation.
    """
    import zlib

    from fastfn.data import default_data

    if cfg.train is None and cfg.val is None:
        kw = dict(size=cfg.synth_size, coils=cfg.synth_coils if multicoil else None,
                  slices=cfg.synth_slices)
        train = default_data("train", volumes=cfg.synth_volumes, **kw)
        val = default_data("val", volumes=cfg.synth_val_volumes, **kw)
        return train, val, f"synthetic default data ({train.parent.name}, {val.parent.name})"
    if cfg.train is None:
        raise ValueError("data.val is set but data.train is not (give --data too)")
    root = Path(cfg.train).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if cfg.val is not None:
        val = Path(cfg.val).expanduser()
        if not val.exists():
            raise FileNotFoundError(f"validation data folder {val} does not exist")
        return root, val, f"{root} (train), {val} (val)"
    if root.is_dir() and (root / "train").is_dir() and (root / "val").is_dir():
        return root / "train", root / "val", f"{root}/train, {root}/val"
    if root.is_file():
        raise ValueError(f"data {root} is a single file; give a folder of volumes, or "
                         f"--val-data for validation")
    files = _h5_files(root)
    if not files:
        raise ValueError(f"data folder {root} has no usable .h5/.hdf5 files")
    if len(files) < 2:
        raise ValueError(f"data folder {root} has only {len(files)} volume; at least 2 are "
                         f"needed to hold one out for validation (or give --val-data)")
    n_val = min(len(files) - 1, max(1, round(cfg.val_fraction * len(files))))
    ranked = sorted(files, key=lambda p: (zlib.crc32(p.name.encode()), p.name))
    val_files = sorted(ranked[:n_val])
    train_files = sorted(ranked[n_val:])
    return train_files, val_files, (f"{root}: {len(train_files)} train / {len(val_files)} "
                                    f"val volumes (val_fraction {cfg.val_fraction})")


def build_datasets(cfg: "DataConfig", multicoil: bool, seed: int = 0):
    """(train dataset, val dataset, description) of fastfn.data ``SliceDataset``s.

    Training slices get a fresh mask per slice and epoch (``EpochMaskTransform``);
    validation slices the per-volume mask of fastMRI (seeded by the file name).
    """
    from fastfn.data import KspaceTransform, SliceDataset

    train_src, val_src, desc = resolve_data_folders(cfg, multicoil)
    challenge = "multicoil" if multicoil else "singlecoil"
    train_tf = EpochMaskTransform(KspaceTransform(mask_function(cfg.mask, seed=seed),
                                                  crop_size=cfg.crop_size, use_seed=False), seed)
    val_tf = KspaceTransform(mask_function(cfg.mask), crop_size=cfg.crop_size, use_seed=True)
    datasets = []
    for src, tf, rate, what in ((train_src, train_tf, cfg.sample_rate, "training"),
                                (val_src, val_tf, None, "validation")):
        try:
            ds = SliceDataset(src, tf, challenge=challenge,
                              volume_sample_rate=rate if rate and rate < 1 else None,
                              sample_seed=seed)
        except (ValueError, KeyError) as e:
            raise ValueError(f"{what} data ({_describe(src)}): {e}") from e
        if len(ds) == 0:
            raise ValueError(f"{what} data ({_describe(src)}) has no usable {challenge} slices")
        datasets.append(ds)
    return datasets[0], datasets[1], desc


def _describe(src: Any) -> str:
    if isinstance(src, (list, tuple)):
        return f"{len(src)} files in {Path(src[0]).parent}" if src else "no files"
    return str(src)


def build_loaders(cfg: "DataConfig", multicoil: bool, seed: int = 0, dist: Any = None):
    """(train loader, val loader, description) for the trainer; DDP-aware.

    Under DDP both use fastfn.data's ``VolumeDistributedSampler`` (whole volumes per
    rank, equal batch counts); otherwise training shuffles per epoch and validation
    runs in order.
    """
    from fastfn.data import VolumeDistributedSampler, collate

    train_ds, val_ds, desc = build_datasets(cfg, multicoil, seed)
    if dist is not None and dist.distributed:
        train_sampler = VolumeDistributedSampler(train_ds, dist.world_size, dist.rank,
                                                 shuffle=True, seed=seed,
                                                 batch_size=cfg.batch_size)
        val_sampler = VolumeDistributedSampler(val_ds, dist.world_size, dist.rank, shuffle=False)
    else:
        train_sampler = EpochShuffleSampler(len(train_ds), seed, shuffle=True)
        val_sampler = EpochShuffleSampler(len(val_ds), seed, shuffle=False)
    train = make_loader(train_ds, cfg.batch_size, sampler=train_sampler, seed=seed,
                        num_workers=cfg.num_workers, collate_fn=collate,
                        epoch_hooks=[train_ds.transform.set_epoch])
    val = make_loader(val_ds, cfg.val_batch_size or cfg.batch_size, sampler=val_sampler, seed=seed,
                      num_workers=cfg.num_workers, collate_fn=collate)
    return train, val, desc


class FixedMaskFunc:
    """A fixed column mask from a ``.npy`` file (1-D, length W, nonzero = sampled), with
    the call signature of ``fastfn.data.MaskFunc``: ``(shape, offset, seed) ->
    (mask (1, W) float32, num_low_frequencies)``. Raises ValueError naming the file when
    its width does not fit the k-space."""

    def __init__(self, path: str | Path) -> None:
        import numpy as np
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"mask file {self.path} does not exist")
        try:
            arr = np.load(self.path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"mask file {self.path} is not a readable .npy array: {e}") from e
        arr = np.asarray(arr).squeeze()
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"mask file {self.path}: expected a 1-D column mask, got shape "
                             f"{tuple(np.shape(arr))}")
        self.mask = torch.from_numpy((arr != 0).astype("float32")).reshape(1, -1)
        self.rng = np.random.RandomState(0)  # unused: the mask does not vary

    def __repr__(self) -> str:
        return f"FixedMaskFunc({str(self.path)!r})"

    def __call__(self, shape: Sequence[int], offset: Any = None, seed: Any = None):
        width = int(shape[-1])
        if self.mask.shape[-1] != width:
            raise ValueError(f"mask file {self.path} has {self.mask.shape[-1]} columns but the "
                             f"k-space has {width} (shape {tuple(shape)})")
        m = self.mask[0]
        c = width // 2
        lo = c
        while lo > 0 and m[lo - 1] > 0:
            lo -= 1
        hi = c
        while hi < width and m[hi] > 0:
            hi += 1
        return self.mask.clone(), hi - lo


def mask_function(spec: str, seed: int | None = None):
    """A mask function from the CLI/config text: a spec such as ``random:4x@0.08``
    (``fastfn.data.parse_mask_spec``) or the path of a ``.npy`` column mask."""
    if spec.endswith(".npy"):
        return FixedMaskFunc(spec)
    from fastfn.data import parse_mask_spec
    return parse_mask_spec(spec, seed=seed)
