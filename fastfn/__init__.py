"""fastfn: find and fix the false negatives of deep-learning MRI reconstruction.

Layers, from the bottom (imports point down only; docs/ARCHITECTURE.md): csrc kernels,
fastfn.fileio / configs / seeding -> fastfn.ops -> fastfn.data -> fastfn.metrics /
losses -> fastfn.models -> fastfn.attack -> fastfn.train -> fastfn.evaluation ->
fastfn.cli.
"""
from __future__ import annotations

import json

import torch

from fastfn import _extension

_extension.load()

__version__ = "0.1.0"


def _op_names() -> list[str]:
    """Every public op registered in the fastfn namespace (schemas, not kernels)."""
    names = {n.split("::", 1)[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
             if n.startswith("fastfn::")}
    return sorted(n for n in names if not n.startswith("_"))


def build_info() -> dict:
    """What this installation was built with and which kernels it has.

    Returns a dict: ``torch`` (runtime version), ``torch_built`` (version the
    binary was compiled against), ``cuda`` (torch's CUDA version or None),
    ``with_cuda`` (CUDA kernels compiled in), ``cuda_archs`` (nvcc targets),
    ``ops`` (every fastfn op) and ``cuda_ops`` / ``cpu_ops`` (those with a
    kernel registered for that dispatch key).
    """
    info = json.loads(torch.ops.fastfn._build_info())
    ops = _op_names()

    def has(op: str, key: str) -> bool:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"fastfn::{op}", key)

    return {
        "fastfn": __version__,
        "torch": torch.__version__,
        "torch_built": info.get("torch_version_built") or None,
        "cuda": torch.version.cuda,
        "with_cuda": info["with_cuda"],
        "cuda_archs": info["cuda_archs"].split(";") if info["cuda_archs"] else [],
        "ops": ops,
        "cpu_ops": [op for op in ops if has(op, "CPU")],
        "cuda_ops": [op for op in ops if has(op, "CUDA")],
    }


__all__ = ["build_info", "__version__"]
