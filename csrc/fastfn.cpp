// Every fastfn operator's schema, in one place. Kernels live beside each op
// family (csrc/<family>/<family>_cpu.cpp, _cuda.cu) and register with
// TORCH_LIBRARY_IMPL; the dispatcher picks CPU or CUDA. Autograd and fake
// (meta) kernels are registered from Python (fastfn/ops/).
#include <Python.h>
#include <torch/library.h>

#include <string>

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

  // ---- masked FFT family (csrc/masked_fft): see masked_fft.h for shapes ----
  // Centred orthonormal 2D FFT over the last two dims of a complex tensor.
  m.def("fft2c(Tensor x) -> Tensor");
  m.def("ifft2c(Tensor x) -> Tensor");
  // ifft2c(mask * fft2c(x)); mask real, (Bm, Hm, W) with Bm in {1, B}, Hm in {1, H}.
  m.def("undersample(Tensor x, Tensor mask) -> Tensor");
  // Hard (lam None) or soft data consistency, single- or multi-coil (sens given).
  m.def("data_consistency(Tensor x, Tensor k0, Tensor mask, Tensor? sens, Tensor? lam) -> Tensor");
  // All gradients of data_consistency in one pass; output_mask selects
  // (grad_x, grad_k0, grad_sens, grad_lam); unselected ones come back empty.
  m.def("data_consistency_backward(Tensor grad, Tensor x, Tensor k0, Tensor mask, Tensor? sens, "
        "Tensor? lam, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");

  // ---- feature family (csrc/features): see features.h ----
  // Perturbed images (N,R,H,W) and loss-region masks (N,R,H,W) from images (N,H,W),
  // flat pixel indices (N,R,P) int64 (-1 = padding) and intensities (N,R,P).
  m.def("insert_features(Tensor images, Tensor index, Tensor values, int ring) -> (Tensor, Tensor)");
  // One projected (sign or normalised) gradient-ascent step on the intensities,
  // updating values and perturbed in place.
  m.def("feature_step(Tensor(a!) perturbed, Tensor(b!) values, Tensor index, Tensor grad, Tensor lo, "
        "Tensor hi, Tensor step, bool normalize) -> ()");
}

// The extension is a Python module only so that `import fastfn._C` loads it;
// every entry point is a torch op.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "fastfn operators (torch.ops.fastfn)", -1, nullptr};
  return PyModule_Create(&def);
}
