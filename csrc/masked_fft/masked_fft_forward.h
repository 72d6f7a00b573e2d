// Host code of the forward masked-FFT ops, written once for every device (the Backend
// contract is in masked_fft_schedule.h): checks, buffers, ATen's FFTs (pocketfft/MKL on
// CPU, cuFFT with ATen's plan cache on CUDA) and the passes. Also the coil and
// measurement helpers the backward (masked_fft_backward.h) shares.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "masked_fft/masked_fft.h"
#include "masked_fft/masked_fft_2d.h"
#include "masked_fft/masked_fft_check.h"
#include "masked_fft/masked_fft_columns.h"
#include "masked_fft/masked_fft_image_passes.h"
#include "masked_fft/masked_fft_schedule.h"

namespace fastfn {
namespace mfft {

using at::Tensor;

template <typename T>
T inverse_sqrt(int64_t n) {
  return static_cast<T>(1.0 / std::sqrt(static_cast<double>(n)));
}

// The dims a spectrum is transformed along: H and W, or W only for a column mask.
inline std::vector<int64_t> spectrum_dims(const Geometry& g) {
  if (g.column_mask()) return {2};
  return {1, 2};
}

// ---------------------------------------------------------------- centring phases

// r_H and r_W of one call: for an odd size a table of its n values, built on the device
// by one pass (no host work, so nothing to synchronise and nothing a CUDA graph could not
// capture) and kept alive here for the call's passes; nothing for an even size.
template <typename T>
struct PhaseTables {
  Tensor h_table, w_table;
  PhaseRamp<T> h, w;
};

template <class Backend, typename T>
PhaseRamp<T> phase_ramp(int64_t n, const at::TensorOptions& opts, Tensor& table) {
  if ((n & 1) == 0) return PhaseRamp<T>{nullptr, n};
  table = at::empty({n}, opts);
  FillPhaseRamp<T> fill{table.data_ptr<cx<T>>(), n};
  Backend::launch(fill, 1, n);
  return PhaseRamp<T>{table.data_ptr<cx<T>>(), n};
}

template <class Backend, typename T>
PhaseTables<T> phase_tables(int64_t H, int64_t W, const at::TensorOptions& opts) {
  PhaseTables<T> t;
  t.h = phase_ramp<Backend, T>(H, opts, t.h_table);
  t.w = W == H ? PhaseRamp<T>{t.h.table, W} : phase_ramp<Backend, T>(W, opts, t.w_table);
  return t;
}

// ---------------------------------------------------------------- fft2c / ifft2c

template <class Backend>
Tensor centred_fft(const Tensor& x_in, bool forward) {
  check_image(x_in, forward ? "fft2c" : "ifft2c");
  const typename Backend::DeviceGuard guard(x_in.device());
  const Tensor x = x_in.contiguous();
  if (x.numel() == 0) return at::empty_like(x);
  const int64_t H = x.size(-2), W = x.size(-1), N = x.numel() / (H * W);
  Tensor buf = at::empty({N, H, W}, x.options());
  AT_DISPATCH_COMPLEX_TYPES(x.scalar_type(), "masked_fft", [&] {
    using T = typename scalar_t::value_type;
    // F_c x = conj(c) conj(r) fft(conj(r) x);  F_c^-1 y = c r ifft(r y)
    const cx<T> scale(inverse_sqrt<T>(H * W), T(0));
    const PhaseTables<T> ph = phase_tables<Backend, T>(H, W, x.options());
    CentringPhase<T> pre{x.data_ptr<cx<T>>(), buf.data_ptr<cx<T>>(), H, W, forward, scale, ph.h, ph.w};
    Backend::launch(pre, N * H, W);
    buf = fft_along<Backend>(buf, {1, 2}, forward);
    const cx<T> c = centring_constant<T>(H) * centring_constant<T>(W);
    CentringPhase<T> post{buf.data_ptr<cx<T>>(), buf.data_ptr<cx<T>>(), H, W, forward,
                          forward ? conj(c) : c, ph.h, ph.w};
    Backend::launch(post, N * H, W);
  });
  return buf.view(x.sizes());
}

template <class Backend>
Tensor fft2c(const Tensor& x) {
  return centred_fft<Backend>(x, true);
}

template <class Backend>
Tensor ifft2c(const Tensor& k) {
  return centred_fft<Backend>(k, false);
}

// ---------------------------------------------------------------- undersample

// FFT (along H and W, or W only for a column mask), the mask, the inverse; a column mask
// runs in image chunks.
template <class Backend>
Tensor undersample(const Tensor& x_in, const Tensor& mask_in) {
  const Geometry g = check_undersample(x_in, mask_in);
  const typename Backend::DeviceGuard guard(x_in.device());
  const Tensor x = x_in.contiguous(), mask = mask_in.contiguous();
  if (x.numel() == 0) return at::empty_like(x);
  const Tensor xv = x.view({g.Bx, g.H, g.W});
  Tensor out;
  AT_DISPATCH_COMPLEX_TYPES(x.scalar_type(), "masked_fft", [&] {
    using T = typename scalar_t::value_type;
    const T scale = inverse_sqrt<T>(g.column_mask() ? g.W : g.H * g.W);
    auto images = [&](int64_t n0, int64_t n1) {
      Tensor X = fft_along<Backend>(xv.narrow(0, n0, n1 - n0), spectrum_dims(g), true);
      MaskSpectrum<T> pass{X.data_ptr<cx<T>>(), mask.data_ptr<T>(), g.Bm, g.Hm, g.H, g.W, n0, scale};
      Backend::launch(pass, (n1 - n0) * g.H, g.W);
      return fft_along<Backend>(X, spectrum_dims(g), false);
    };
    out = g.column_mask() ? by_image_chunks<Backend>(g.Bx, image_chunk<Backend>(g.Bx, g.H, g.W, x.options()),
                                                     g.H, g.W, x.options(), images)
                          : images(0, g.Bx);
  });
  return out.view(x.sizes());
}

// ---------------------------------------------------------------- data consistency: shared parts

// The checked inputs of data_consistency(_backward), contiguous; sens/lam undefined when
// absent.
struct DcInputs {
  Tensor x, k0, mask, sens, lam;
  Geometry g;
};

inline DcInputs dc_inputs(const Geometry& g, const Tensor& x, const Tensor& k0, const Tensor& mask,
                          const c10::optional<Tensor>& sens, const c10::optional<Tensor>& lam) {
  DcInputs in;
  in.g = g;
  in.x = x.contiguous();
  in.k0 = k0.contiguous();
  in.mask = mask.contiguous();
  if (sens.has_value()) in.sens = sens->contiguous();
  if (lam.has_value()) in.lam = lam->contiguous();
  return in;
}

template <typename T>
const T* lam_ptr(const DcInputs& in) {
  return in.lam.defined() ? in.lam.data_ptr<T>() : nullptr;
}

template <typename T>
Frame2d<T> frame_2d(const DcInputs& in, const PhaseTables<T>& ph) {
  const Geometry& g = in.g;
  return Frame2d<T>{g.C, g.H, g.W, in.mask.data_ptr<T>(), g.Bm, in.k0.data_ptr<cx<T>>(), lam_ptr<T>(in),
                    inverse_sqrt<T>(g.H * g.W), ph.h, ph.w};
}

// The frame of the column passes; the chunk's measurement (meas, n0) is set per chunk by
// frame_chunk.
template <typename T>
ColumnFrame<T> column_frame(const DcInputs& in, const ColumnPlan& plan, const PhaseTables<T>& ph) {
  const Geometry& g = in.g;
  ColumnFrame<T> f{};
  f.C = g.C;
  f.H = g.H;
  f.W = g.W;
  f.mask = in.mask.data_ptr<T>();
  f.Bm = g.Bm;
  f.cols = plan.idx.data_ptr<int64_t>();
  f.K = plan.K;
  f.n0 = 0;
  f.meas = nullptr;
  f.meas_constant = centring_constant<T>(g.H) * inverse_sqrt<T>(g.H);
  f.lam = lam_ptr<T>(in);
  f.scale = inverse_sqrt<T>(g.W);
  f.rh = ph.h;
  f.rw = ph.w;
  return f;
}

// S_c img (multi-coil) or img itself for coil images [n0, n1) (n = b * C + c), as
// (n1 - n0, H, W).
template <class Backend, typename T>
Tensor coil_images(const DcInputs& in, const Tensor& img, int64_t n0, int64_t n1) {
  const Geometry& g = in.g;
  const int64_t count = n1 - n0;
  if (!in.sens.defined()) return img.view({g.Bx, g.H, g.W}).narrow(0, n0, count);
  Tensor e = at::empty({count, g.H, g.W}, img.options());
  CoilImages<T> pass{in.sens.data_ptr<cx<T>>() + n0 * g.H * g.W, img.data_ptr<cx<T>>(), e.data_ptr<cx<T>>(),
                     g.C, g.H, g.W, n0};
  Backend::launch(pass, count * g.H, g.W);
  return e;
}

template <class Backend, typename T>
Tensor coil_images(const DcInputs& in, const Tensor& img) {
  return coil_images<Backend, T>(in, img, 0, in.g.images());
}

// scale * sum_c conj(S_c) u_c (multi-coil) or u itself (scale 1 only), shaped like x.
template <class Backend, typename T>
Tensor coil_combine(const DcInputs& in, const Tensor& u, T scale = T(1)) {
  const Geometry& g = in.g;
  if (!in.sens.defined()) {
    TORCH_INTERNAL_ASSERT(scale == T(1));
    return u.view(in.x.sizes());
  }
  Tensor out = at::empty(in.x.sizes(), u.options());
  CoilCombine<T> pass{in.sens.data_ptr<cx<T>>(), u.data_ptr<cx<T>>(), out.data_ptr<cx<T>>(), g.C, g.H, g.W,
                      scale};
  Backend::launch(pass, g.Bx * g.H, g.W);
  return out;
}

// Multi-coil: sum_c conj(S_c) u_c (B, H, W) with the coil images u from fn(n0, n1) as in
// by_image_chunks, combined chunk by chunk while cached instead of assembling all of
// them first. Each task sums its (contiguous) coils of an image into a private partial
// sum, so coils of one image may be split across tasks (a batch of one still uses every
// thread); the partials are added in coil order afterwards, so the result does not
// depend on which task finishes first.
template <class Backend, typename T, class Fn>
Tensor combined_by_image_chunks(const DcInputs& in, int64_t chunk, const Fn& fn) {
  const Geometry& g = in.g;
  const int64_t N = g.images(), HW = g.H * g.W;
  if constexpr (Backend::kImageChunks) {
    if (chunk < N) {
      struct Partial {
        int64_t first_coil_image, b;
        Tensor sum;
      };
      std::vector<Partial> partials;
      std::mutex partials_lock;
      Backend::for_each_range((N + chunk - 1) / chunk, [&](int64_t c0, int64_t c1) {
        Partial part{-1, -1, Tensor()};
        auto flush = [&] {
          if (part.b < 0) return;
          const std::lock_guard<std::mutex> hold(partials_lock);
          partials.push_back(part);
        };
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t n0 = c * chunk, n1 = std::min(N, n0 + chunk);
          const Tensor u = fn(n0, n1);
          for (int64_t n = n0; n < n1; ++n) {
            if (n / g.C != part.b) {
              flush();
              part = Partial{n, n / g.C, at::zeros({g.H, g.W}, in.x.options())};
            }
            CoilCombineAdd<T> add{in.sens.data_ptr<cx<T>>() + n * HW, u.data_ptr<cx<T>>() + (n - n0) * HW,
                                  part.sum.template data_ptr<cx<T>>(), g.W};
            Backend::launch(add, g.H, g.W);
          }
        }
        flush();
      });
      std::sort(partials.begin(), partials.end(), [](const Partial& l, const Partial& r) {
        return l.first_coil_image < r.first_coil_image;
      });
      Tensor out = at::empty({g.Bx, g.H, g.W}, in.x.options());
      for (size_t i = 0; i < partials.size(); ++i) {
        Tensor dst = out.select(0, partials[i].b);
        if (i == 0 || partials[i - 1].b != partials[i].b) dst.copy_(partials[i].sum);
        else dst.add_(partials[i].sum);
      }
      return out.view(in.x.sizes());
    }
  }
  return coil_combine<Backend, T>(in, fn(0, N), Backend::kFoldInverseScale ? T(1) / T(g.W) : T(1));
}

// The column passes' measurement of every coil image, (N, K, H): ifft_H (unnormalised)
// of k0's gathered, pre-phased sampled columns. Prepared once per k0 and mask and reused
// (MeasurementCache) by the DC layers of an unrolled network, forward and backward,
// except where Backend::reuse_allowed() says no (while a CUDA graph is captured: a
// graph must compute what it reads from k0, so that a replay sees new values copied
// into it) or the caches are switched off (column_reuse_enabled). Needs f.K > 0.
template <class Backend, typename T>
Tensor column_measurement(const DcInputs& in, const ColumnFrame<T>& f, const ColumnPlan& plan) {
  MeasurementCache& cache = MeasurementCache::instance();
  const bool reuse = Backend::reuse_allowed() && column_reuse_enabled().load(std::memory_order_relaxed);
  if (reuse) {
    Tensor hit = cache.find(in.k0, plan);
    if (hit.defined()) return hit;
  }
  const Geometry& g = in.g;
  const int64_t N = g.images();
  Tensor buf = at::empty({N, f.K, g.H}, in.x.options());
  if constexpr (Backend::kGatherRowsFastest) {
    GatherColumnRows<T> gather{in.k0.data_ptr<cx<T>>(), f.cols, buf.data_ptr<cx<T>>(), g.C, g.H, g.W, f.K, g.Bm,
                               f.rh};
    Backend::launch(gather, N * f.K, g.H);
  } else {
    GatherColumns<T, Backend::kColumnTileRows> gather{
        in.k0.data_ptr<cx<T>>(), f.cols, buf.data_ptr<cx<T>>(), g.C, g.H, g.W, f.K, g.Bm, 0, f.rh};
    Backend::launch(gather, N * row_blocks<Backend::kColumnTileRows>(g.H), f.K);
  }
  Tensor meas = at::_fft_c2c(buf, {2}, kFftUnnormalised, /*forward=*/false);
  TORCH_INTERNAL_ASSERT(meas.is_contiguous());
  cache.built(in.k0, plan, meas, reuse);
  return meas;
}

// Points the column frame at coil images [n0, ...) of the measurement (N, K, H).
template <typename T>
void frame_chunk(ColumnFrame<T>& f, const Tensor& meas, int64_t n0) {
  f.n0 = n0;
  f.meas = meas.defined() ? meas.data_ptr<cx<T>>() + n0 * f.K * f.H : nullptr;
}

// ---------------------------------------------------------------- data consistency

// Column-path DC of coil images [n0, n1), returned as (n1 - n0, H, W):
// U = ifft_W(blend(fft_W(S x), meas)) / W, meas = ifft_H(gathered k0 columns) (N, K, H)
// from column_measurement (undefined when K = 0). On a chunking backend
// one cache-sized chunk of images per task (see image_chunk), else one call over the batch.
//
// Backend::kFoldInverseScale (CUDA, one call over the batch): the inverse FFT is left
// unnormalised and its 1/W goes into the pass before it (single-coil: DcBlendRows over
// every column) or after it (multi-coil: the coil combine, see combined_by_image_chunks).
template <class Backend, typename T>
Tensor dc_columns_images(const DcInputs& in, ColumnFrame<T> f, const ColumnPlan& plan, const Tensor& meas,
                         int64_t n0, int64_t n1) {
  const Geometry& g = in.g;
  const int64_t count = n1 - n0;
  frame_chunk(f, meas, n0);
  const Tensor img = coil_images<Backend, T>(in, in.x, n0, n1);
  Tensor X = at::_fft_c2c(img, {2}, kFftUnnormalised, /*forward=*/true);
  TORCH_INTERNAL_ASSERT(X.is_contiguous());
  if constexpr (Backend::kFoldInverseScale) {
    static_assert(!Backend::kImageChunks, "the fold assumes one call over the batch");
    if (in.sens.defined()) {
      if (f.K > 0) {
        DcBlendColumns<T, Backend::kColumnTileRows> blend{f, X.data_ptr<cx<T>>()};
        Backend::launch(blend, count * row_blocks<Backend::kColumnTileRows>(g.H), f.K);
      }
    } else {
      DcBlendRows<T> blend{f, plan.slot.data_ptr<int64_t>(), X.data_ptr<cx<T>>(), T(1) / T(g.W)};
      Backend::launch(blend, count * g.H, g.W);
    }
    return at::_fft_c2c(X, {2}, kFftUnnormalised, /*forward=*/false);
  }
  if (f.K > 0) {
    DcBlendColumns<T, Backend::kColumnTileRows> blend{f, X.data_ptr<cx<T>>()};
    Backend::launch(blend, count * row_blocks<Backend::kColumnTileRows>(g.H), f.K);
  }
  return at::_fft_c2c(X, {2}, kFftByN, /*forward=*/false);
}

template <class Backend, typename T>
Tensor dc_columns(const DcInputs& in) {
  const Geometry& g = in.g;
  const ColumnPlan plan = column_plan(in.mask, g);
  const PhaseTables<T> ph = phase_tables<Backend, T>(g.H, g.W, in.x.options());
  const ColumnFrame<T> f = column_frame<T>(in, plan, ph);
  const Tensor meas = f.K > 0 ? column_measurement<Backend, T>(in, f, plan) : Tensor();
  auto images = [&](int64_t n0, int64_t n1) { return dc_columns_images<Backend, T>(in, f, plan, meas, n0, n1); };
  const int64_t chunk = image_chunk<Backend>(g.images(), g.H, g.W, in.x.options());
  if (in.sens.defined()) return combined_by_image_chunks<Backend, T>(in, chunk, images);
  return by_image_chunks<Backend>(g.Bx, chunk, g.H, g.W, in.x.options(), images).view(in.x.sizes());
}

template <class Backend, typename T>
Tensor dc_2d(const DcInputs& in) {
  const Geometry& g = in.g;
  Tensor X = fft_along<Backend>(coil_images<Backend, T>(in, in.x), spectrum_dims(g), true);
  const PhaseTables<T> ph = phase_tables<Backend, T>(g.H, g.W, in.x.options());
  DcBlend2d<T> blend{frame_2d<T>(in, ph), X.data_ptr<cx<T>>()};
  Backend::launch(blend, g.images() * g.H, g.W);
  return coil_combine<Backend, T>(in, fft_along<Backend>(X, spectrum_dims(g), false));
}

template <class Backend>
Tensor data_consistency(const Tensor& x, const Tensor& k0, const Tensor& mask, const c10::optional<Tensor>& sens,
                        const c10::optional<Tensor>& lam) {
  const Geometry g = check_dc(x, k0, mask, sens, lam, "data_consistency");
  const typename Backend::DeviceGuard guard(x.device());
  const DcInputs in = dc_inputs(g, x, k0, mask, sens, lam);
  if (in.x.numel() == 0 || in.k0.numel() == 0) return at::zeros_like(in.x);
  Tensor out;
  AT_DISPATCH_COMPLEX_TYPES(in.x.scalar_type(), "data_consistency", [&] {
    using T = typename scalar_t::value_type;
    out = g.column_mask() ? dc_columns<Backend, T>(in) : dc_2d<Backend, T>(in);
  });
  return out;
}

}  // namespace mfft
}  // namespace fastfn
