"""Where fastfn keeps generated data and caches."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """fastfn's cache folder: ``$FASTFN_CACHE`` or ``~/.cache/fastfn``."""
    env = os.environ.get("FASTFN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastfn"
