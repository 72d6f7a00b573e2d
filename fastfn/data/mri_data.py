"""SliceDataset: the slices of a folder (or list) of fastMRI ``.h5`` files.

Each file is inspected once (keys, shapes, dtypes, ``ismrmrd_header``,
attributes, a readability check of its last slice); the result is kept in a
JSON metadata cache keyed by path, modification time and size, so a large
folder is scanned once. HDF5 handles are opened lazily, kept per process (a
forked DataLoader worker notices the pid change and opens its own) and reused
across slices; every ``__getitem__`` reads one slice.
"""
from __future__ import annotations

import json
import os
import random
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
import torch

from fastfn.data.h5io import TARGET_KEYS, parse_ismrmrd_header
from fastfn.fileio import atomic_write_text
from fastfn.data.paths import cache_dir

__all__ = ["SliceDataset", "RawSample", "RawSlice", "inspect_file", "BadFileError"]

CACHE_VERSION = 1
H5_SUFFIXES = (".h5", ".hdf5")
_ATTR_KEYS = ("max", "norm", "acquisition", "patient_id")


class BadFileError(ValueError):
    """A file that is not a usable fastMRI volume; the message names file and key."""


class RawSample(NamedTuple):
    """One entry of the index: file, slice, and the file's metadata (see :func:`inspect_file`)."""
    fname: Path
    slice_ind: int
    metadata: Dict[str, Any]


class RawSlice(NamedTuple):
    """What the dataset returns without a transform (fastMRI's argument order)."""
    kspace: np.ndarray
    mask: Optional[np.ndarray]
    target: Optional[np.ndarray]
    attrs: Dict[str, Any]
    fname: str
    slice_num: int


def _plain(value: Any) -> Any:
    """HDF5 attribute -> JSON-able Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _bad(path: Path, msg: str) -> BadFileError:
    return BadFileError(f"{path}: {msg}")


def inspect_file(path: Union[str, Path], challenge: Optional[str] = None) -> Dict[str, Any]:
    """Validate one fastMRI file and return its metadata (JSON-able dict).

    Keys: ``num_slices``, ``multicoil``, ``kspace_shape`` (without slices),
    ``target_key`` (or None), ``encoding_size``, ``recon_size``, ``padding_left``,
    ``padding_right``, ``has_header``, ``has_mask``, ``has_labels``, ``has_sens``,
    ``attrs`` (``max``, ``norm``, ``acquisition``, ``patient_id`` and any other
    scalar attribute).

    Raises:
        BadFileError (a ValueError) naming the file and the key at fault: not HDF5
        (or empty/truncated), no ``kspace``, wrong dims or dtype, a target or mask
        of the wrong shape, a bad header, non-finite values in the last slice.
    """
    path = Path(path)
    if challenge not in (None, "singlecoil", "multicoil"):
        raise ValueError(f"challenge must be None, 'singlecoil' or 'multicoil', got {challenge!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise _bad(path, f"not a readable HDF5 file (empty, truncated or another format): {e}") from None
    with f:
        if "kspace" not in f:
            raise _bad(path, f"no 'kspace' dataset (found keys {sorted(f.keys())}); expected a "
                             "fastMRI file with kspace (slices, [coils,] H, W)")
        ks = f["kspace"]
        if ks.ndim not in (3, 4):
            raise _bad(path, f"'kspace' has shape {ks.shape}; expected (slices, H, W) single-coil "
                             "or (slices, coils, H, W) multi-coil")
        if ks.dtype.kind != "c":
            raise _bad(path, f"'kspace' has dtype {ks.dtype}; expected complex64")
        num_slices = int(ks.shape[0])
        if num_slices == 0 or 0 in ks.shape:
            raise _bad(path, f"'kspace' is empty, shape {ks.shape}")
        multicoil = ks.ndim == 4
        if challenge is not None and multicoil != (challenge == "multicoil"):
            raise _bad(path, f"'kspace' has shape {ks.shape}, which is not {challenge} data")
        H, W = int(ks.shape[-2]), int(ks.shape[-1])

        target_key = TARGET_KEYS[multicoil]
        if target_key not in f:
            target_key = None
        else:
            t = f[target_key]
            if t.ndim != 3 or t.shape[0] != num_slices:
                raise _bad(path, f"'{target_key}' has shape {t.shape}; expected "
                                 f"(slices={num_slices}, h, w)")

        has_header = "ismrmrd_header" in f
        if has_header:
            try:
                geometry = parse_ismrmrd_header(f["ismrmrd_header"][()], where=str(path))
            except (ValueError, KeyError) as e:  # their messages name the file and the field
                raise BadFileError(str(e).strip("'\"")) from None
        else:
            rh, rw = (f[target_key].shape[-2:] if target_key else (min(320, H), min(320, W)))
            geometry = {"encoding_size": (H, W, 1), "recon_size": (int(rh), int(rw), 1),
                        "padding_left": 0, "padding_right": W}
        if not 0 <= geometry["padding_left"] < geometry["padding_right"] <= W:
            raise _bad(path, f"'ismrmrd_header' gives acquired columns [{geometry['padding_left']}, "
                             f"{geometry['padding_right']}), outside the k-space width {W}")

        has_mask = "mask" in f
        if has_mask and f["mask"].shape[-1] != W:
            raise _bad(path, f"'mask' has shape {f['mask'].shape}; expected ({W},) columns")
        has_labels = "fastfn_labels" in f
        if has_labels and tuple(f["fastfn_labels"].shape) != (num_slices, H, W):
            raise _bad(path, f"'fastfn_labels' has shape {f['fastfn_labels'].shape}; expected "
                             f"{(num_slices, H, W)}")
        has_sens = "fastfn_sens" in f
        if has_sens and tuple(f["fastfn_sens"].shape) != tuple(ks.shape[1:]):
            raise _bad(path, f"'fastfn_sens' has shape {f['fastfn_sens'].shape}; expected "
                             f"{tuple(ks.shape[1:])}")

        attrs = {k: _plain(v) for k, v in f.attrs.items()
                 if np.ndim(v) == 0 or isinstance(v, (bytes, str))}
        for key in ("max", "norm"):
            if key in attrs and not (isinstance(attrs[key], (int, float)) and np.isfinite(attrs[key])):
                raise _bad(path, f"attribute '{key}' is {attrs[key]!r}; expected a finite number")

        # Reading the last slice catches truncated files and (some) corrupt data now
        # rather than in the middle of an epoch.
        for key in ("kspace",) + ((target_key,) if target_key else ()):
            try:
                last = f[key][num_slices - 1]
            except (OSError, RuntimeError) as e:
                raise _bad(path, f"cannot read '{key}' slice {num_slices - 1} (truncated?): {e}") from None
            if not np.isfinite(last).all():
                raise _bad(path, f"'{key}' slice {num_slices - 1} contains non-finite values")

    return {"num_slices": num_slices, "multicoil": multicoil,
            "kspace_shape": [int(s) for s in ks.shape[1:]], "target_key": target_key,
            "encoding_size": list(geometry["encoding_size"]), "recon_size": list(geometry["recon_size"]),
            "padding_left": int(geometry["padding_left"]), "padding_right": int(geometry["padding_right"]),
            "has_header": has_header, "has_mask": has_mask, "has_labels": has_labels,
            "has_sens": has_sens, "attrs": attrs}


class _MetadataCache:
    """JSON file {version, entries: {abs path: {mtime_ns, size, challenge, metadata}}}."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self.entries: Dict[str, Any] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == CACHE_VERSION:
                    self.entries = data.get("entries", {})
            except (OSError, ValueError):
                warnings.warn(f"metadata cache {path} is unreadable; rebuilding it")

    @staticmethod
    def _stamp(file: Path) -> Tuple[int, int]:
        st = file.stat()
        return st.st_mtime_ns, st.st_size

    def get(self, file: Path, challenge: Optional[str]) -> Optional[Dict[str, Any]]:
        e = self.entries.get(str(file.resolve()))
        if e and (e["mtime_ns"], e["size"]) == self._stamp(file) and e["challenge"] == challenge:
            return e["metadata"]
        return None

    def put(self, file: Path, challenge: Optional[str], metadata: Dict[str, Any]) -> None:
        mtime, size = self._stamp(file)
        self.entries[str(file.resolve())] = {"mtime_ns": mtime, "size": size,
                                             "challenge": challenge, "metadata": metadata}
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries = dict(self.entries)
        try:  # keep what concurrent writers added meanwhile
            on_disk = json.loads(self.path.read_text())
            if on_disk.get("version") == CACHE_VERSION:
                entries = {**on_disk.get("entries", {}), **entries}
        except (OSError, ValueError):
            pass
        # Forget files that no longer exist (temporary folders, moved data sets).
        entries = {k: v for k, v in entries.items() if os.path.exists(k)}
        atomic_write_text(self.path, json.dumps({"version": CACHE_VERSION, "entries": entries}))
        self.dirty = False


def _list_files(root: Union[str, Path, Sequence[Union[str, Path]]]) -> List[Path]:
    roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    files: List[Path] = []
    for r in roots:
        r = Path(r)
        if r.is_dir():
            files += sorted(p for p in r.iterdir() if p.suffix in H5_SUFFIXES and p.is_file())
        elif r.is_file():
            files.append(r)
        else:
            raise FileNotFoundError(f"SliceDataset: no such file or folder: {r}")
    return files


class SliceDataset(torch.utils.data.Dataset):
    """Slices of fastMRI ``.h5`` volumes.

    Args:
        root: a folder (its ``*.h5``/``*.hdf5`` files), a file, or a list of either.
        transform: called as ``transform(kspace, mask, target, attrs, fname, slice_num)``
            (e.g. :class:`fastfn.data.KspaceTransform`); None returns a :class:`RawSlice`.
            ``attrs``: the file attributes plus ``encoding_size``, ``recon_size``,
            ``padding_left``/``padding_right`` and, for fastfn files, ``labels`` (uint8
            (H, W)) and ``sens`` (complex64 (C, H, W)).
        challenge: ``"singlecoil"``/``"multicoil"`` to insist on one kind; None accepts
            both (target ``reconstruction_esc`` for 3-D, ``reconstruction_rss`` for 4-D k-space).
        sample_rate: keep this fraction of the slices; volume_sample_rate: of the volumes
            (not both). Drawn with ``random.Random(sample_seed)``.
        filter: ``filter(RawSample) -> bool`` keeps a slice, e.g.
            ``lambda s: s.metadata["attrs"]["acquisition"] == "CORPD_FBK"``.
        metadata_cache: JSON cache file, True for ``<cache_dir>/metadata_cache.json``,
            False/None for none.
        on_bad_file: ``"raise"`` (default) or ``"skip"`` (warn, count in ``skipped``).
        check_finite: check every slice read for NaN/inf and raise naming file, key, slice.
        max_open_files: HDF5 handles kept open per process (least recently used closed).
    """

    def __init__(self, root: Union[str, Path, Sequence[Union[str, Path]]],
                 transform: Optional[Callable[..., Any]] = None, *,
                 challenge: Optional[str] = None, sample_rate: Optional[float] = None,
                 volume_sample_rate: Optional[float] = None, sample_seed: int = 0,
                 filter: Optional[Callable[[RawSample], bool]] = None,
                 metadata_cache: Union[bool, str, Path, None] = True,
                 on_bad_file: str = "raise", check_finite: bool = True, max_open_files: int = 64):
        if on_bad_file not in ("raise", "skip"):
            raise ValueError(f"on_bad_file must be 'raise' or 'skip', got {on_bad_file!r}")
        if sample_rate is not None and volume_sample_rate is not None:
            raise ValueError("give sample_rate or volume_sample_rate, not both")
        for name, rate in (("sample_rate", sample_rate), ("volume_sample_rate", volume_sample_rate)):
            if rate is not None and not 0.0 < rate <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {rate}")
        self.transform = transform
        self.challenge = challenge
        self.check_finite = check_finite
        self.max_open_files = max_open_files
        self.skipped: List[Tuple[Path, str]] = []

        if metadata_cache is True:
            cache_path: Optional[Path] = cache_dir() / "metadata_cache.json"
        elif metadata_cache:
            cache_path = Path(metadata_cache)
        else:
            cache_path = None
        cache = _MetadataCache(cache_path)

        self.raw_samples: List[RawSample] = []
        for file in _list_files(root):
            meta = cache.get(file, challenge)
            if meta is None:
                try:
                    meta = inspect_file(file, challenge)
                except BadFileError as e:
                    if on_bad_file == "raise":
                        raise
                    warnings.warn(f"skipping bad file: {e}")
                    self.skipped.append((file, str(e)))
                    continue
                cache.put(file, challenge, meta)
            for s in range(meta["num_slices"]):
                sample = RawSample(file, s, meta)
                if filter is None or filter(sample):
                    self.raw_samples.append(sample)
        try:
            cache.save()
        except OSError as e:  # a read-only cache folder must not stop training
            warnings.warn(f"could not write metadata cache {cache_path}: {e}")

        rng = random.Random(sample_seed)
        if sample_rate is not None and sample_rate < 1.0:
            keep = sorted(rng.sample(range(len(self.raw_samples)),
                                     round(len(self.raw_samples) * sample_rate)))
            self.raw_samples = [self.raw_samples[i] for i in keep]
        elif volume_sample_rate is not None and volume_sample_rate < 1.0:
            names = sorted({str(s.fname) for s in self.raw_samples})
            chosen = set(rng.sample(names, round(len(names) * volume_sample_rate)))
            self.raw_samples = [s for s in self.raw_samples if str(s.fname) in chosen]

        self._handles: "OrderedDict[Path, h5py.File]" = OrderedDict()
        self._sens: Dict[Path, np.ndarray] = {}  # coil maps: one per volume, read once
        self._pid = os.getpid()
        self.num_opens = 0  # files opened by this process (for tests and diagnostics)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.raw_samples)

    def volumes(self) -> "OrderedDict[str, List[int]]":
        """Dataset indices grouped by file, in index order."""
        groups: "OrderedDict[str, List[int]]" = OrderedDict()
        for i, s in enumerate(self.raw_samples):
            groups.setdefault(str(s.fname), []).append(i)
        return groups

    # -- HDF5 handles ------------------------------------------------------------------
    def _handle(self, path: Path) -> h5py.File:
        if os.getpid() != self._pid:
            # A forked worker: the parent's handles must not be shared; drop (do not
            # close) them and open our own.
            self._handles = OrderedDict()
            self._sens = {}
            self._pid = os.getpid()
            self.num_opens = 0
        f = self._handles.get(path)
        if f is None:
            try:
                f = h5py.File(path, "r")
            except OSError as e:
                raise BadFileError(f"{path}: cannot open as HDF5: {e}") from None
            self.num_opens += 1
            self._handles[path] = f
            while len(self._handles) > self.max_open_files:
                old, handle = self._handles.popitem(last=False)
                handle.close()
                self._sens.pop(old, None)
        else:
            self._handles.move_to_end(path)
        return f

    def close(self) -> None:
        """Close this process's HDF5 handles."""
        if os.getpid() == self._pid:
            for f in self._handles.values():
                f.close()
        self._handles = OrderedDict()
        self._sens = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        state["_sens"] = {}
        state["_pid"] = None
        return state

    def _read(self, f: h5py.File, path: Path, key: str, index) -> np.ndarray:
        try:
            data = f[key][index]
        except (OSError, RuntimeError, KeyError) as e:
            raise BadFileError(f"{path}: cannot read '{key}' slice {index}: {e}") from None
        if self.check_finite and data.dtype.kind in "fc" and not np.isfinite(data).all():
            raise BadFileError(f"{path}: '{key}' slice {index} contains non-finite values")
        return data

    def __getitem__(self, i: int):
        path, s, meta = self.raw_samples[i]
        f = self._handle(path)
        kspace = self._read(f, path, "kspace", s)
        target = self._read(f, path, meta["target_key"], s) if meta["target_key"] else None
        mask = np.asarray(f["mask"][()]) if meta["has_mask"] else None
        attrs: Dict[str, Any] = dict(meta["attrs"])
        attrs.update({k: meta[k] for k in ("encoding_size", "recon_size", "padding_left",
                                           "padding_right")})
        if meta["has_labels"]:
            attrs["labels"] = self._read(f, path, "fastfn_labels", s)
        if meta["has_sens"]:
            if path not in self._sens:
                self._sens[path] = self._read(f, path, "fastfn_sens", slice(None))
            attrs["sens"] = self._sens[path]
        if self.transform is None:
            return RawSlice(kspace, mask, target, attrs, path.name, s)
        return self.transform(kspace, mask, target, attrs, path.name, s)
