// The device schedule of the feature ops, free of CUDA headers: the per-thread bodies of
// the index check, the insertion and the projected step, with the memory updates that
// threads may race on given as policies (atomic on the device, plain on the host), and
// the host code around them, written once for a Backend:
//
//   Backend::DeviceGuard                       made from the inputs' device
//   Backend::check_index(IndexCheck)           runs IndexCheck::feature over f in [0, F)
//   Backend::insert<T>(InsertPixels<T>)        runs InsertPixels::pixel over t in [0, N R P)
//   Backend::step<T>(StepFeatures<T>)          runs the block algorithm of StepFeatures on
//                                              every feature (features_cuda.cu)
//
// features_cuda.cu is the CUDA backend; the schedule emulation of the tests
// (tests/cuda_schedule_emulation) runs the same bodies on the CPU thread by thread.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "features/features.h"
#include "features/features_check.h"

namespace fastfn {
namespace features {

// The first out-of-range index (flat position f * P + p) and the first feature without
// pixels, as atomic minima over the features. Both slots start at kNone.
struct IndexCheck {
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  const int64_t* idx;  // (F, P)
  int64_t P, HW;
  int64_t* first;      // [0]: first bad position, [1]: first empty feature
  template <class Min>
  FASTFN_HD void feature(int64_t f, const Min& min) const {
    int64_t valid = 0;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t i = idx[f * P + p];
      if (i < -1 || i >= HW) {
        min(first, f * P + p);
        return;
      }
      valid += i >= 0;
    }
    if (valid == 0) min(first + 1, f);
  }
};

// One thread per feature pixel t = f * P + p: perturbed[f, i] += value (pixels of a
// feature may repeat, so the add is the policy's), ring marks are stores of 1.
template <typename T>
struct InsertPixels {
  const int64_t* idx;  // (F, P), checked
  const T* val;        // (F, P)
  T* out;              // (F, H, W), the images copied into every slot
  T* region;           // (F, H, W), zeros
  int64_t P, H, W, ring;
  template <class Add>
  FASTFN_HD void pixel(int64_t t, const Add& add) const {
    const int64_t i = idx[t];
    if (i < 0 || i >= H * W) return;
    const int64_t f = t / P, HW = H * W;
    add(out + f * HW + i, val[t]);
    mark_ring(region + f * HW, i, H, W, ring);
  }
};

// The projected step, one block of `lanes` threads per feature f, in three phases with
// a barrier between them:
//   1. lane_sums:   lane l sums g^2 and counts the valid pixels p = l, l + lanes, ...
//   2. reduce_level (normalised mode): a tree over the lanes' sums in shared memory,
//                   level s = lanes / 2, ..., 1 (lane l < s adds lane l + s)
//   3. lane_update: lane l steps its pixels with the scale from the sums' total.
// An index outside [0, H*W) is skipped, never written through (the CUDA op does not
// re-check the indices every step; insert_features checked them).
template <typename T>
struct StepFeatures {
  T* pert;             // (F, H, W)
  T* val;              // (F, P)
  const int64_t* idx;  // (F, P)
  const T* grad;       // (F, H, W), not overlapping pert
  const T* lo;         // (F,)
  const T* hi;
  const T* step;
  int64_t F, P, HW;
  bool normalize;

  FASTFN_HD void lane_sums(int64_t f, int64_t lane, int64_t lanes, T& sum, int64_t& count) const {
    const int64_t* fi = idx + f * P;
    const T* gf = grad + f * HW;
    sum = T(0);
    count = 0;
    for (int64_t p = lane; p < P; p += lanes) {
      const int64_t i = fi[p];
      if (i < 0 || i >= HW) continue;
      sum += gf[i] * gf[i];
      ++count;
    }
  }
  static FASTFN_HD void reduce_level(T* sums, int64_t* counts, int64_t lane, int64_t s) {
    if (lane < s) {
      sums[lane] += sums[lane + s];
      counts[lane] += counts[lane + s];
    }
  }
  template <class Add>
  FASTFN_HD void lane_update(int64_t f, int64_t lane, int64_t lanes, T scale, const Add& add) const {
    const int64_t* fi = idx + f * P;
    const T* gf = grad + f * HW;
    for (int64_t p = lane; p < P; p += lanes) {
      const int64_t i = fi[p];
      if (i < 0 || i >= HW) continue;
      const T g = gf[i];
      const T d = normalize ? g * scale : sign_of(g);
      const T v = val[f * P + p];
      const T v_new = projected_step(v, d, step[f], lo[f], hi[f]);
      val[f * P + p] = v_new;
      add(pert + f * HW + i, v_new - v);
    }
  }
};

// Threads of a feature's block: a power of two from 32 up to `max_lanes`, enough for P.
inline int64_t step_lanes(int64_t P, int64_t min_lanes, int64_t max_lanes) {
  int64_t lanes = min_lanes;
  while (lanes < P && lanes < max_lanes) lanes <<= 1;
  return lanes;
}

// One check kernel and one device-to-host copy of two integers per call; the messages
// are the CPU kernel's (the first fault in feature order, a range fault of a feature
// before its emptiness), and only a failing call reads the offending index.
template <class Backend>
void check_index_values(const at::Tensor& index, int64_t HW, const char* op) {
  const int64_t F = index.size(0) * index.size(1), P = index.size(2);
  if (F == 0) return;
  at::Tensor first = at::full({2}, IndexCheck::kNone, index.options());
  Backend::check_index(IndexCheck{index.const_data_ptr<int64_t>(), P, HW, first.data_ptr<int64_t>()}, F);
  const at::Tensor host = first.cpu();
  const int64_t bad = host.const_data_ptr<int64_t>()[0], empty = host.const_data_ptr<int64_t>()[1];
  const int64_t R = index.size(1);
  if (bad != IndexCheck::kNone && (empty == IndexCheck::kNone || bad / P <= empty)) {
    const int64_t f = bad / P, p = bad % P;
    TORCH_CHECK(false, op, ": index[", f / R, ", ", f % R, ", ", p, "] = ", index.view({-1})[bad].item<int64_t>(),
                " lies outside the image (valid: 0 <= index < H*W = ", HW, ", or -1 for padding)");
  }
  TORCH_CHECK(empty == IndexCheck::kNone, op, ": feature [", empty / R, ", ", empty % R,
              "] has an empty support (every index is -1)");
}

template <class Backend>
std::tuple<at::Tensor, at::Tensor> insert_features_device(const at::Tensor& images, const at::Tensor& index,
                                                          const at::Tensor& values, int64_t ring) {
  check_insert_args(images, index, values, ring, "insert_features");
  const typename Backend::DeviceGuard guard(images.device());
  const int64_t N = images.size(0), H = images.size(1), W = images.size(2), R = index.size(1);
  const at::Tensor idx = index.contiguous(), val = values.contiguous();
  check_index_values<Backend>(idx, H * W, "insert_features");
  // A fresh buffer: expand().contiguous() would alias `images` when R == 1.
  at::Tensor out = at::empty({N, R, H, W}, images.options());
  out.copy_(images.unsqueeze(1).expand({N, R, H, W}));
  at::Tensor region = at::zeros({N, R, H, W}, images.options());
  if (out.numel() == 0) return {out, region};
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "insert_features", [&] {
    Backend::template insert<scalar_t>(InsertPixels<scalar_t>{idx.const_data_ptr<int64_t>(),
                                                              val.const_data_ptr<scalar_t>(),
                                                              out.data_ptr<scalar_t>(), region.data_ptr<scalar_t>(),
                                                              idx.size(2), H, W, ring},
                                       idx.numel());
  });
  return {out, region};
}

// No index check here (it would cost a host sync per attack step): the indices were
// checked by insert_features, and the kernel skips any outside the image.
template <class Backend>
void feature_step_device(at::Tensor& perturbed, at::Tensor& values, const at::Tensor& index, const at::Tensor& grad,
                         const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& step, bool normalize) {
  check_step_args(perturbed, values, index, grad, lo, hi, step, "feature_step");
  const typename Backend::DeviceGuard guard(perturbed.device());
  if (values.numel() == 0) return;
  const at::Tensor g = grad.contiguous(), l = lo.contiguous(), h = hi.contiguous(), s = step.contiguous();
  AT_DISPATCH_FLOATING_TYPES(perturbed.scalar_type(), "feature_step", [&] {
    Backend::template step<scalar_t>(StepFeatures<scalar_t>{
        perturbed.data_ptr<scalar_t>(), values.data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
        g.const_data_ptr<scalar_t>(), l.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(),
        s.const_data_ptr<scalar_t>(), index.size(0) * index.size(1), index.size(2),
        perturbed.size(2) * perturbed.size(3), normalize});
  });
}

}  // namespace features
}  // namespace fastfn
