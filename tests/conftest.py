"""Shared fixtures: devices (CPU always, CUDA when present), seeded RNG, shared data.

Nothing here touches CUDA at import time.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _cuda_ok() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_ok():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> torch.device:
    """Every device this machine has: cpu, and cuda when available (skipped otherwise)."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    """../shared/data of the development checkout; skips when absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no shared data folder at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread_per_module():
    """One torch thread for a module of small-tensor tests: intra-op threads gain nothing
    there, and on a shared 2-core CPU they contend (OpenMP spin-waiting made them ~10x
    slower). Restores the previous setting. Use with pytest.mark.usefixtures."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fastmri():
    """fastMRI's package with its models and transforms importable.

    ``fastmri/data/__init__.py`` imports the dataset module (pandas, requests), which
    these tests do not use: without those packages the ``fastmri.data`` package is
    registered without running its ``__init__``, so its submodules import on their own.
    """
    spec = importlib.util.find_spec("fastmri")
    if spec is None:
        pytest.skip("the fastmri package is not installed (pip install --no-deps fastmri==0.3.0)")
    import fastmri as fm
    try:
        import fastmri.data  # noqa: F401
    except ImportError:
        pkg = types.ModuleType("fastmri.data")
        pkg.__path__ = [str(Path(fm.__file__).parent / "data")]
        sys.modules["fastmri.data"] = pkg
        fm.data = pkg
    import fastmri.data.subsample  # noqa: F401
    import fastmri.data.transforms  # noqa: F401
    import fastmri.models  # noqa: F401
    return fm
