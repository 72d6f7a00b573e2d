"""The compiled extension: it imports, every op schema has a CPU kernel (and a CUDA
kernel in CUDA builds), and fastfn.build_info() describes the binary."""
from __future__ import annotations

import torch

import fastfn

MASKED_FFT_OPS = {"fft2c", "ifft2c", "undersample", "data_consistency", "data_consistency_backward"}


def _has(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"fastfn::{op}", key)


def test_extension_registers_the_ops():
    info = fastfn.build_info()
    assert MASKED_FFT_OPS <= set(info["ops"])
    for op in MASKED_FFT_OPS:
        assert hasattr(torch.ops.fastfn, op)


def test_every_op_has_a_cpu_kernel():
    info = fastfn.build_info()
    missing = [op for op in info["ops"] if not _has(op, "CPU")]
    assert not missing, f"ops without a CPU kernel: {missing}"
    assert sorted(info["cpu_ops"]) == sorted(info["ops"])


def test_cuda_kernels_match_the_build():
    info = fastfn.build_info()
    if info["with_cuda"]:
        missing = [op for op in info["ops"] if not _has(op, "CUDA")]
        assert not missing, f"CUDA build but ops without a CUDA kernel: {missing}"
        assert info["cuda_archs"], "CUDA build without recorded architectures"
    else:
        assert info["cuda_ops"] == []
        assert not any(_has(op, "CUDA") for op in info["ops"])


def test_build_info_content():
    info = fastfn.build_info()
    assert info["torch"] == torch.__version__
    assert info["cuda"] == torch.version.cuda
    assert info["fastfn"] == fastfn.__version__
    # the binary was compiled against this torch's major.minor (ABI)
    assert info["torch_built"] is not None
    assert info["torch_built"].split(".")[:2] == torch.__version__.split("+")[0].split(".")[:2]
    assert isinstance(info["with_cuda"], bool)
