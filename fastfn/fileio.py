"""Atomic file writes and plain-data conversion, shared by every layer that writes.

A write goes to a temporary file in the destination folder, is flushed and
fsynced, gets the usual permissions, and replaces the destination with one
``os.replace``; a crash mid-write leaves the old file (or none), never a torn one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def umask() -> int:
    """The process umask (read without changing it for other threads for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO], Any], *, text: bool = False) -> Path:
    """Create or replace ``path`` atomically with what ``write(f)`` writes to an open file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), text=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (some filesystems refuse: then it is best effort)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


def to_plain(x: Any) -> Any:
    """Nested dicts/lists/tuples/dataclasses as plain dicts and lists (YAML-, JSON- and
    ``torch.load(weights_only=True)``-safe)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_plain(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    return x
