// The fastfn library: every operator's schema (common/op_schemas.h) and the build facts.
// Kernels live beside each op family (csrc/<family>/<family>_cpu.cpp, _cuda.cu) and register with
// TORCH_LIBRARY_IMPL; the dispatcher picks CPU or CUDA. Autograd and fake
// (meta) kernels are registered from Python (fastfn/ops/).
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "common/op_schemas.h"

#if __has_include(<torch/headeronly/version.h>)
#include <torch/headeronly/version.h>
#elif __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

#ifndef FASTFN_CUDA_ARCHS
#define FASTFN_CUDA_ARCHS ""
#endif

namespace fastfn {

// Compile-time facts about this binary, as JSON, for fastfn.build_info().
static std::string build_info_json() {
#ifdef FASTFN_WITH_CUDA
  const bool with_cuda = true;
#else
  const bool with_cuda = false;
#endif
  std::string s = "{\"with_cuda\": ";
  s += with_cuda ? "true" : "false";
  s += ", \"cuda_archs\": \"";
  s += FASTFN_CUDA_ARCHS;
  s += "\", \"torch_version_built\": \"";
#ifdef TORCH_VERSION
  s += TORCH_VERSION;
#endif
  s += "\"}";
  return s;
}

}  // namespace fastfn

TORCH_LIBRARY(fastfn, m) {
  m.def("_build_info() -> str", &fastfn::build_info_json);

  fastfn::define_op_schemas(m);
}

// The extension is a Python module only so that `import fastfn._C` loads it;
// every entry point is a torch op.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "fastfn operators (torch.ops.fastfn)", -1, nullptr};
  return PyModule_Create(&def);
}
