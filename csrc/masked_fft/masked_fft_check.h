// Argument checks of the masked-FFT ops, shared by the CPU and CUDA kernels: shapes,
// dtypes and devices, with messages naming the argument. The one place they are written
// in C++: the Python wrappers (fastfn/ops/masked_fft.py) only normalise inputs, and the
// fake kernels there repeat these checks message for message, for meta tensors and
// torch.compile tracing. Shapes and devices raise ValueError, dtypes TypeError (in
// Python). They read only metadata (no tensor op, no device memory), so they run before
// the device guard and before any copy.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>

#include "common/dtype_name.h"

namespace fastfn {
namespace mfft {

inline void check_device(const at::Tensor& t, const at::Tensor& x, const char* op, const char* arg) {
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", arg, " is on ", t.device(), " but x is on ", x.device(),
                    "; all inputs must be on one device");
}

// A complex argument: x's dtype.
inline void check_dtype_of_x(const at::Tensor& t, const at::Tensor& x, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), op, ": ", arg, " has dtype ", dtype_name(t.scalar_type()),
                   " but x has ", dtype_name(x.scalar_type()));
}

// A real argument (mask, lam): the real dtype of x.
inline void check_real_dtype_of_x(const at::Tensor& t, const at::Tensor& x, const char* op, const char* arg) {
  const at::ScalarType real = c10::toRealValueType(x.scalar_type());
  TORCH_CHECK_TYPE(t.scalar_type() == real, op, ": ", arg, " must have dtype ", dtype_name(real),
                   " (the real dtype of x), got ", dtype_name(t.scalar_type()));
}

// x of every op: complex, (..., H, W).
inline void check_image(const at::Tensor& x, const char* op) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kComplexFloat || x.scalar_type() == at::kComplexDouble, op,
                   ": x must be complex64 or complex128, got ", dtype_name(x.scalar_type()));
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": x must be (..., H, W), got shape ", x.sizes());
}

// Shapes of one call, after the checks: data (N = Bx * C, H, W), mask (Bm, Hm, W).
struct Geometry {
  int64_t Bx = 1, C = 1, H = 0, W = 0, Bm = 1, Hm = 1;
  bool column_mask() const { return Hm == 1; }
  int64_t images() const { return Bx * C; }
};

// The number of (H, W) images in x (..., H, W).
inline int64_t batch_count(const at::Tensor& x) {
  int64_t n = 1;
  for (int64_t d = 0; d + 2 < x.dim(); ++d) n *= x.size(d);
  return n;
}

// mask (Bm, Hm, W) for x (..., H, W) holding Bx images.
inline Geometry check_mask(const at::Tensor& mask, const at::Tensor& x, int64_t Bx, const char* op) {
  Geometry g;
  g.H = x.size(-2);
  g.W = x.size(-1);
  g.Bx = Bx;
  check_device(mask, x, op, "mask");
  check_real_dtype_of_x(mask, x, op, "mask");
  TORCH_CHECK_VALUE(mask.dim() == 3, op, ": mask must be (Bm, Hm, W) = (1 or ", Bx, ", 1 or ", g.H, ", ", g.W,
                    "), got shape ", mask.sizes(), " (fastfn.ops normalises broadcastable masks)");
  TORCH_CHECK_VALUE(mask.size(2) == g.W, op, ": mask has ", mask.size(2), " columns, the image has W = ", g.W);
  TORCH_CHECK_VALUE(mask.size(1) == 1 || mask.size(1) == g.H, op, ": mask has ", mask.size(1),
                    " rows; expected 1 (column mask) or H = ", g.H);
  TORCH_CHECK_VALUE(mask.size(0) == 1 || mask.size(0) == Bx, op, ": mask batch is ", mask.size(0),
                    "; expected 1 or the batch size ", Bx);
  g.Bm = mask.size(0);
  g.Hm = mask.size(1);
  return g;
}

inline Geometry check_undersample(const at::Tensor& x, const at::Tensor& mask) {
  check_image(x, "undersample");
  return check_mask(mask, x, batch_count(x), "undersample");
}

inline Geometry check_dc(const at::Tensor& x, const at::Tensor& k0, const at::Tensor& mask,
                         const c10::optional<at::Tensor>& sens, const c10::optional<at::Tensor>& lam,
                         const char* op) {
  check_image(x, op);
  check_device(k0, x, op, "k0");
  check_dtype_of_x(k0, x, op, "k0");
  int64_t C = 1;
  if (sens.has_value()) {
    check_device(*sens, x, op, "sens");
    check_dtype_of_x(*sens, x, op, "sens");
    TORCH_CHECK_VALUE(x.dim() == 3, op, ": multi-coil x must be (B, H, W), got shape ", x.sizes());
    TORCH_CHECK_VALUE(sens->dim() == 4 && sens->size(0) == x.size(0) && sens->size(2) == x.size(1) &&
                          sens->size(3) == x.size(2),
                      op, ": sens must be (B, C, H, W) = (", x.size(0), ", C, ", x.size(1), ", ", x.size(2),
                      ") for x of shape ", x.sizes(), ", got ", sens->sizes());
    TORCH_CHECK_VALUE(k0.sizes() == sens->sizes(), op, ": k0 must be (B, C, H, W) like sens ", sens->sizes(),
                      ", got ", k0.sizes());
    C = sens->size(1);
  } else {
    TORCH_CHECK_VALUE(k0.sizes() == x.sizes(), op, ": k0 must have the shape of x ", x.sizes(), ", got ",
                      k0.sizes());
  }
  if (lam.has_value()) {
    check_device(*lam, x, op, "lam");
    check_real_dtype_of_x(*lam, x, op, "lam");
    TORCH_CHECK_VALUE(lam->numel() == 1, op, ": lam must be a single value (0-dim tensor), got shape ",
                      lam->sizes());
  }
  Geometry g = check_mask(mask, x, batch_count(x), op);
  g.C = C;
  return g;
}

// grad of data_consistency_backward: like x.
inline void check_grad(const at::Tensor& grad, const at::Tensor& x, const char* op) {
  check_device(grad, x, op, "grad");
  check_dtype_of_x(grad, x, op, "grad");
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), op, ": grad must have the shape of x ", x.sizes(), ", got ",
                    grad.sizes());
}

}  // namespace mfft
}  // namespace fastfn
