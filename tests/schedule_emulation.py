"""The CUDA backends' schedule run on the CPU (tests/cuda_schedule_emulation), as the ops of
the ``fastfn_emu`` namespace, and the switch that routes fastfn.ops through them.

``load()`` builds the test-only library with torch.utils.cpp_extension (ninja, a minute
or two the first time, cached after) and registers the fake kernels and autograd of the
``fastfn`` ops for it, so that the wrappers, autograd, opcheck and torch.compile run
against the emulated schedule unchanged. ``active()`` points fastfn.ops at it and turns
on torch's filling of uninitialised memory (NaN in floating point tensors), so that an
element no emulated thread writes shows up in the results.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

import fastfn.ops.features as features_ops
import fastfn.ops.masked_fft as masked_fft_ops

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "cuda_schedule_emulation" / "emulated_ops.cpp"
NAMESPACE = "fastfn_emu"
# The default schedule: 8 threads a block, at least 2 of them along x, at most 2 x 3
# blocks, 4 lanes a feature block; forward thread order.
DEFAULT = dict(threads_per_block=8, min_threads_x=2, max_blocks_x=2, max_blocks_y=3, max_lanes=4)

_state: dict = {}


def load():
    """torch.ops.fastfn_emu, built and registered once per process."""
    if "ops" in _state:
        return _state["ops"]
    from torch.utils.cpp_extension import load as load_extension

    build = Path(os.environ.get("FASTFN_EMU_BUILD", ROOT / "build" / "schedule_emulation"))
    build.mkdir(parents=True, exist_ok=True)
    load_extension(name="fastfn_schedule_emulation", sources=[str(SOURCE)],
                   extra_include_paths=[str(ROOT / "csrc")], extra_cflags=["-O1"],
                   build_directory=str(build), is_python_module=False, verbose=False)
    _register_python_parts()
    _state["ops"] = getattr(torch.ops, NAMESPACE)
    return _state["ops"]


def _register_python_parts():
    m, f = masked_fft_ops, features_ops
    for name, fake in [("fft2c", m._fft2c_fake), ("ifft2c", m._ifft2c_fake), ("undersample", m._undersample_fake),
                       ("data_consistency", m._dc_fake), ("data_consistency_backward", m._dc_backward_fake),
                       ("insert_features", f._insert_features_fake), ("feature_step", f._feature_step_fake)]:
        torch.library.register_fake(f"{NAMESPACE}::{name}", fake)
    reg = torch.library.register_autograd
    reg(f"{NAMESPACE}::fft2c", m._fft2c_backward)
    reg(f"{NAMESPACE}::ifft2c", m._ifft2c_backward)
    reg(f"{NAMESPACE}::undersample", m._undersample_backward, setup_context=m._undersample_setup)
    reg(f"{NAMESPACE}::data_consistency", m._dc_backward, setup_context=m._dc_setup)
    reg(f"{NAMESPACE}::data_consistency_backward", m._no_second_derivative)
    reg(f"{NAMESPACE}::insert_features", f._insert_backward, setup_context=f._insert_setup_context)


def set_schedule(reverse: bool = False, **limits) -> None:
    """The emulated grid's limits (DEFAULT unless given) and thread order."""
    shape = {**DEFAULT, **limits}
    load()._set_schedule(shape["threads_per_block"], shape["min_threads_x"], shape["max_blocks_x"],
                         shape["max_blocks_y"], shape["max_lanes"], reverse)


@contextlib.contextmanager
def active(reverse: bool = False, **limits):
    """fastfn.ops on the emulated schedule, uninitialised memory filled with NaN."""
    ops = load()
    set_schedule(reverse, **limits)
    saved = masked_fft_ops._ops, features_ops._ops
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    masked_fft_ops._ops = features_ops._ops = ops
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield ops
    finally:
        masked_fft_ops._ops, features_ops._ops = saved
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        set_schedule()
