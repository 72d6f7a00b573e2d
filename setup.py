"""Build the fastfn extension (fastfn._C): CPU kernels always, CUDA kernels when asked.

Switches (environment variables):
  FASTFN_CPU_ONLY=1   never build CUDA kernels, even with a CUDA torch and nvcc.
  FORCE_CUDA=1        build CUDA kernels even where no GPU is visible (compile checks);
                      fails loudly if torch has no CUDA or nvcc is missing.
  (neither)           CUDA kernels when torch is a CUDA build and nvcc is found.
  TORCH_CUDA_ARCH_LIST  architectures for nvcc; defaults to "8.0;9.0" when no GPU
                      is visible (torch cannot guess them then).
  CUDA_HOME           the CUDA toolkit; when unset, the first of $CUDA_PATH,
                      /usr/local/cuda and nvcc's own prefix that holds cuda_runtime.h.

Install with `pip install --no-build-isolation -e .` so the extension compiles
against the torch of the environment.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(msg: str) -> None:
    print(f"[fastfn build] {msg}", file=sys.stderr, flush=True)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _locate_cuda_home() -> str | None:
    """Find a CUDA toolkit before torch guesses: nvcc on PATH may be a wrapper
    script whose parent folder is not the toolkit (torch would then fail to link
    cudart)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for c in candidates:
        if c and os.path.exists(os.path.join(c, "include", "cuda_runtime.h")):
            return c
    return None


_cuda_home = _locate_cuda_home()
if _cuda_home and not os.environ.get("CUDA_HOME"):
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402  (after CUDA_HOME is settled)
from torch.utils.cpp_extension import (  # noqa: E402
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _decide_cuda() -> tuple[bool, str]:
    if _flag("FASTFN_CPU_ONLY"):
        return False, "FASTFN_CPU_ONLY=1"
    forced = _flag("FORCE_CUDA")
    if torch.version.cuda is None:
        if forced:
            raise SystemExit("FORCE_CUDA=1 but the installed torch "
                             f"{torch.__version__} is a CPU-only build")
        return False, f"torch {torch.__version__} has no CUDA"
    if _cuda_home is None:
        if forced:
            raise SystemExit("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME "
                             "to the folder holding bin/nvcc and include/cuda_runtime.h")
        return False, "no CUDA toolkit (nvcc) found"
    return True, "FORCE_CUDA=1" if forced else f"torch CUDA {torch.version.cuda} and nvcc found"


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", pattern), recursive=True))


def _extension():
    with_cuda, why = _decide_cuda()
    cpp = _sources("**/*.cpp")
    cu = _sources("**/*.cu") if with_cuda else []
    archs = ""
    cxx = ["-O3"]  # the C++ standard is torch's choice (2.14 needs C++20)
    if sys.platform != "win32":
        cxx.append("-fopenmp")
    defines = []
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "(detected from visible GPUs)")
        defines.append(("FASTFN_WITH_CUDA", "1"))
    defines.append(("FASTFN_CUDA_ARCHS", f'"{archs}"'))
    _log(f"torch {torch.__version__}; CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    if with_cuda:
        _log(f"CUDA_HOME={os.environ.get('CUDA_HOME')}  TORCH_CUDA_ARCH_LIST={archs}")
    _log("sources: " + " ".join(cpp + cu))
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        # pip-installed CUDA torch ships the CUDA library headers (cuSPARSE, cuBLAS, ...)
        # in nvidia/*/include wheels rather than in the toolkit; ATen's CUDA headers need them.
        nvidia = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia")
        include_dirs += sorted(glob.glob(os.path.join(nvidia, "*", "include")))
    common = dict(
        name="fastfn._C",
        sources=cpp + cu,
        include_dirs=include_dirs,
        define_macros=defines,
    )
    if with_cuda:
        return CUDAExtension(
            **common,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(**common, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])


setup(
    packages=find_packages(include=["fastfn", "fastfn.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)},
)
