"""Loads the compiled operators (torch.ops.fastfn) exactly once.

`FASTFN_LIBRARY=/path/to/lib.so` loads that binary instead of the package's own
fastfn._C (used to test the CMake build of the same sources).
"""
from __future__ import annotations

import os

import torch

_loaded = False


def load() -> None:
    global _loaded
    if _loaded:
        return
    path = os.environ.get("FASTFN_LIBRARY")
    if path:
        if not os.path.isfile(path):
            raise ImportError(f"FASTFN_LIBRARY={path!r}: no such file")
        torch.ops.load_library(path)
    else:
        try:
            from fastfn import _C  # noqa: F401  (registers torch.ops.fastfn.*)
        except ImportError as e:
            raise ImportError(
                "fastfn's compiled extension (fastfn._C) is missing or does not match "
                f"torch {torch.__version__}: reinstall with "
                "`pip install --no-build-isolation -e .` in this environment"
                f" ({e})") from e
    _loaded = True
