"""Shared fixtures: devices (CPU always, CUDA when present, the emulated CUDA schedule for
the operator tests), seeded RNG, shared data.

Nothing here touches CUDA at import time.
"""
from __future__ import annotations

import importlib.util
import os
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


def pytest_generate_tests(metafunc):
    """`device` of every test: cpu, cuda (skipped without a GPU), and for the operator
    tests (test_ops_*) also emu, the CUDA kernels' schedule run on the CPU."""
    if "device" not in metafunc.fixturenames:
        return
    params = ["cpu"]
    if metafunc.module.__name__.startswith("test_ops_"):
        params.append("emu")
    params.append(pytest.param("cuda", marks=pytest.mark.cuda))
    metafunc.parametrize("device", params, indirect=True)


@pytest.fixture
def device(request):
    """torch.device of the test. emu: cpu tensors, with fastfn.ops routed through the
    emulated CUDA schedule (tests/schedule_emulation.py) and uninitialised memory filled
    with NaN; skipped when that test-only library cannot be built here."""
    if request.param != "emu":
        yield torch.device(request.param)
        return
    schedule_emulation = request.getfixturevalue("cuda_schedule_emulation")
    with schedule_emulation.active():
        yield torch.device("cpu")


@pytest.fixture(scope="session")
def cuda_schedule_emulation():
    """tests/schedule_emulation.py with its library built and loaded (once a session)."""
    import shutil

    from torch.utils.cpp_extension import is_ninja_available

    import schedule_emulation

    if not is_ninja_available():
        pytest.skip("the CUDA schedule emulation needs ninja to build (pip install ninja)")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("the CUDA schedule emulation needs a C++ compiler (c++ or $CXX)")
    schedule_emulation.load()
    return schedule_emulation


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
