// The schemas of fastfn's operators, written once: csrc/fastfn.cpp defines them in the
// `fastfn` namespace, and the schedule emulation of the tests
// (tests/cuda_schedule_emulation) in its own namespace, with the same signatures.
#pragma once

#include <torch/library.h>

namespace fastfn {

inline void define_op_schemas(torch::Library& m) {
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

}  // namespace fastfn
