// CPU kernels of the feature family; shapes and semantics in features.h.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <tuple>

#include "features/features.h"
#include "features/features_check.h"

namespace fastfn {
namespace features {
namespace {

// Fails with the first out-of-range index or the first feature without pixels.
void check_index_values_cpu(const at::Tensor& index, int64_t HW, const char* op) {
  const int64_t F = index.size(0) * index.size(1);
  const int64_t P = index.size(2);
  const int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t f = 0; f < F; ++f) {
    int64_t valid = 0;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t i = idx[f * P + p];
      TORCH_CHECK(i >= -1 && i < HW, op, ": index[", f / index.size(1), ", ", f % index.size(1), ", ", p,
                  "] = ", i, " lies outside the image (valid: 0 <= index < H*W = ", HW, ", or -1 for padding)");
      valid += i >= 0;
    }
    TORCH_CHECK(valid > 0, op, ": feature [", f / index.size(1), ", ", f % index.size(1),
                "] has an empty support (every index is -1)");
  }
}

template <typename T>
void insert_loop(const at::Tensor& index, const at::Tensor& values, at::Tensor& out, at::Tensor& region,
                 int64_t H, int64_t W, int64_t ring) {
  const int64_t F = index.size(0) * index.size(1);
  const int64_t P = index.size(2);
  const int64_t HW = H * W;
  const int64_t* idx = index.data_ptr<int64_t>();
  const T* val = values.data_ptr<T>();
  T* o = out.data_ptr<T>();
  T* reg = region.data_ptr<T>();
  // One feature per task: each writes only its own (H, W) slot, so no races.
  at::parallel_for(0, F, 1, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      T* of = o + f * HW;
      T* rf = reg + f * HW;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = idx[f * P + p];
        if (i < 0) continue;
        of[i] += val[f * P + p];
        mark_ring(rf, i, H, W, ring);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> insert_features_cpu(const at::Tensor& images, const at::Tensor& index,
                                                       const at::Tensor& values, int64_t ring) {
  check_insert_args(images, index, values, ring, "insert_features");
  const int64_t N = images.size(0), H = images.size(1), W = images.size(2), R = index.size(1);
  auto idx = index.contiguous();
  auto val = values.contiguous();
  check_index_values_cpu(idx, H * W, "insert_features");
  // A fresh buffer: expand().contiguous() would alias `images` when R == 1.
  auto out = at::empty({N, R, H, W}, images.options());
  out.copy_(images.unsqueeze(1).expand({N, R, H, W}));
  auto region = at::zeros({N, R, H, W}, images.options());
  if (out.numel() == 0) return {out, region};
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "insert_features_cpu", [&] {
    insert_loop<scalar_t>(idx, val, out, region, H, W, ring);
  });
  return {out, region};
}

template <typename T>
void step_loop(at::Tensor& perturbed, at::Tensor& values, const at::Tensor& index, const at::Tensor& grad,
               const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& step, bool normalize) {
  const int64_t F = index.size(0) * index.size(1);
  const int64_t P = index.size(2);
  const int64_t HW = perturbed.size(2) * perturbed.size(3);
  const int64_t* idx = index.data_ptr<int64_t>();
  const T* g = grad.data_ptr<T>();
  const T* lo_p = lo.data_ptr<T>();
  const T* hi_p = hi.data_ptr<T>();
  const T* step_p = step.data_ptr<T>();
  T* pert = perturbed.data_ptr<T>();
  T* val = values.data_ptr<T>();
  at::parallel_for(0, F, 1, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      const int64_t* fi = idx + f * P;
      const T* gf = g + f * HW;
      T scale = T(1);
      if (normalize) {
        T sumsq = T(0);
        int64_t n_valid = 0;
        for (int64_t p = 0; p < P; ++p) {
          if (fi[p] < 0) continue;
          sumsq += gf[fi[p]] * gf[fi[p]];
          ++n_valid;
        }
        scale = normalized_scale(sumsq, n_valid);
      }
      // Read all gradients before writing: with repeated indices a write must
      // not change what a later pixel of the same feature reads (it cannot
      // here: grad is read-only and distinct from perturbed).
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = fi[p];
        if (i < 0) continue;
        const T d = normalize ? gf[i] * scale : sign_of(gf[i]);
        const T v = val[f * P + p];
        const T v_new = projected_step(v, d, step_p[f], lo_p[f], hi_p[f]);
        val[f * P + p] = v_new;
        pert[f * HW + i] += v_new - v;
      }
    }
  });
}

void feature_step_cpu(at::Tensor& perturbed, at::Tensor& values, const at::Tensor& index, const at::Tensor& grad,
                      const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& step, bool normalize) {
  check_step_args(perturbed, values, index, grad, lo, hi, step, "feature_step");
  check_index_values_cpu(index, perturbed.size(2) * perturbed.size(3), "feature_step");
  if (values.numel() == 0) return;
  auto g = grad.contiguous();
  auto l = lo.contiguous();
  auto h = hi.contiguous();
  auto s = step.contiguous();
  AT_DISPATCH_FLOATING_TYPES(perturbed.scalar_type(), "feature_step_cpu", [&] {
    step_loop<scalar_t>(perturbed, values, index, g, l, h, s, normalize);
  });
}

}  // namespace
}  // namespace features
}  // namespace fastfn

TORCH_LIBRARY_IMPL(fastfn, CPU, m) {
  m.impl("insert_features", &fastfn::features::insert_features_cpu);
  m.impl("feature_step", &fastfn::features::feature_step_cpu);
}
