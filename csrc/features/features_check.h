// Argument checks shared by the CPU and CUDA kernels of the feature family:
// shapes, dtypes, devices and layouts, with messages naming the argument (RuntimeError
// in Python). The fake kernels in fastfn/ops/features.py repeat them message for
// message; the index values (inside the image, no empty feature) are checked by the
// kernels themselves (features_cpu.cpp, features_cuda.cu), as they need the data.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <torch/types.h>

#include "common/dtype_name.h"

namespace fastfn {
namespace features {

inline void check_insert_args(const at::Tensor& images, const at::Tensor& index, const at::Tensor& values,
                              int64_t ring, const char* op) {
  TORCH_CHECK(images.dim() == 3, op, ": images must be (N, H, W), got ", images.sizes());
  TORCH_CHECK(images.scalar_type() == at::kFloat || images.scalar_type() == at::kDouble, op,
              ": images must be float32 or float64, got ", dtype_name(images.scalar_type()));
  TORCH_CHECK(index.dim() == 3, op, ": index must be (N, R, P) int64 flat pixel indices, got ", index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong, op, ": index must be int64, got ", dtype_name(index.scalar_type()));
  TORCH_CHECK(values.sizes() == index.sizes(), op, ": values ", values.sizes(), " must have the shape of index ",
              index.sizes());
  TORCH_CHECK(values.scalar_type() == images.scalar_type(), op, ": values dtype ", dtype_name(values.scalar_type()),
              " differs from images dtype ", dtype_name(images.scalar_type()));
  TORCH_CHECK(index.size(0) == images.size(0), op, ": index has ", index.size(0), " images (dim 0), images has ",
              images.size(0));
  TORCH_CHECK(index.size(2) > 0, op, ": index has P = 0 pixels per feature (empty supports)");
  TORCH_CHECK(ring >= 0, op, ": ring must be >= 0, got ", ring);
  TORCH_CHECK(images.device() == index.device() && images.device() == values.device(), op,
              ": images, index and values must be on one device, got ", images.device(), ", ", index.device(), ", ",
              values.device());
}

inline void check_step_args(const at::Tensor& perturbed, const at::Tensor& values, const at::Tensor& index,
                            const at::Tensor& grad, const at::Tensor& lo, const at::Tensor& hi,
                            const at::Tensor& step, const char* op) {
  TORCH_CHECK(perturbed.dim() == 4, op, ": perturbed must be (N, R, H, W), got ", perturbed.sizes());
  TORCH_CHECK(perturbed.scalar_type() == at::kFloat || perturbed.scalar_type() == at::kDouble, op,
              ": perturbed must be float32 or float64, got ", dtype_name(perturbed.scalar_type()));
  TORCH_CHECK(perturbed.is_contiguous() && values.is_contiguous() && index.is_contiguous(), op,
              ": perturbed, values and index must be contiguous (they are updated in place)");
  TORCH_CHECK(index.dim() == 3 && index.scalar_type() == at::kLong, op,
              ": index must be (N, R, P) int64, got ", index.sizes(), " ", dtype_name(index.scalar_type()));
  TORCH_CHECK(index.size(0) == perturbed.size(0) && index.size(1) == perturbed.size(1), op, ": index ",
              index.sizes(), " and perturbed ", perturbed.sizes(), " disagree on (N, R)");
  TORCH_CHECK(index.size(2) > 0, op, ": index has P = 0 pixels per feature (empty supports)");
  TORCH_CHECK(values.sizes() == index.sizes(), op, ": values ", values.sizes(), " must have the shape of index ",
              index.sizes());
  TORCH_CHECK(grad.sizes() == perturbed.sizes(), op, ": grad ", grad.sizes(), " must have the shape of perturbed ",
              perturbed.sizes());
  const int64_t N = perturbed.size(0), R = perturbed.size(1);
  for (const at::Tensor* t : {&lo, &hi, &step}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == N && t->size(1) == R, op, ": lo ", lo.sizes(), ", hi ",
                hi.sizes(), " and step ", step.sizes(), " must be (N, R) = (", N, ", ", R, ")");
  }
  for (const at::Tensor* t : {&values, &grad, &lo, &hi, &step}) {
    TORCH_CHECK(t->scalar_type() == perturbed.scalar_type(), op, ": values, grad, lo, hi and step must have the ",
                "dtype of perturbed (", dtype_name(perturbed.scalar_type()), "), got ", dtype_name(t->scalar_type()));
  }
  for (const at::Tensor* t : {&values, &index, &grad, &lo, &hi, &step}) {
    TORCH_CHECK(t->device() == perturbed.device(), op, ": every argument must be on ", perturbed.device(), ", got ",
                t->device());
  }
  // the step reads grad while it writes perturbed: in one buffer, a lane's write would
  // change what another lane reads (memory only: the fake kernels have none to compare)
  const at::MemOverlapStatus overlap = at::get_overlap_status(perturbed, grad);
  TORCH_CHECK(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial, op,
              ": grad shares memory with perturbed (pass the gradient in its own buffer)");
}

}  // namespace features
}  // namespace fastfn
