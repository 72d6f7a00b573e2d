// Host-side orchestration of the masked-FFT ops, written once for every device:
// argument checks, buffers, ATen's FFTs (pocketfft/MKL on CPU, cuFFT with ATen's
// plan cache on CUDA) and the pointwise passes of masked_fft.h. `Backend::launch(f,
// rows, inner)` runs functor f over rows x inner elements on the device,
// `Backend::image_chunk` and `for_each_range` schedule the hybrid path's image chunks;
// the CPU and CUDA translation units each supply one and register the ops for their key.
// The backward of data_consistency is in masked_fft_backward.h.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "masked_fft/masked_fft.h"

namespace fastfn {
namespace mfft {

using at::Tensor;

// ATen's fft normalisation enum values (fft_norm_mode): "none" (the passes apply the
// 1/sqrt(N) factors) and "by_n" (the hybrid path's inverse along W, so that the passes
// need not touch the unsampled columns).
constexpr int64_t kFftUnnormalised = 0;
constexpr int64_t kFftByN = 2;

// ATen's transform as it returns it: along an inner dim possibly with permuted strides
// (fft_along makes the result contiguous).
inline Tensor fft_strided(const Tensor& t, std::vector<int64_t> dims, bool forward) {
  return at::_fft_c2c(t, dims, kFftUnnormalised, forward);
}

// Backend::kSplitSmall2d: MKL's 2D transform has a fixed cost of milliseconds per call,
// so on CPU small 2D transforms run as two 1D ones (W, then H).
template <class Backend>
Tensor fft_along(const Tensor& t, std::vector<int64_t> dims, bool forward) {
  if (Backend::kSplitSmall2d && dims.size() == 2 && t.size(dims[0]) * t.size(dims[1]) <= 32768) {
    return fft_strided(fft_strided(t, {dims[1]}, forward), {dims[0]}, forward).contiguous();
  }
  return fft_strided(t, dims, forward).contiguous();
}

inline void check_complex(const Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.scalar_type() == at::kComplexFloat || t.scalar_type() == at::kComplexDouble, op,
              ": ", arg, " must be complex64 or complex128, got ", t.scalar_type());
}

inline void check_same(const Tensor& t, const Tensor& x, const char* op, const char* arg,
                       at::ScalarType dtype) {
  TORCH_CHECK(t.device() == x.device(), op, ": ", arg, " is on ", t.device(), " but x is on ",
              x.device(), "; all inputs must be on one device");
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", arg, " must have dtype ", dtype, ", got ",
              t.scalar_type());
}

// Shapes of one call, after the checks: data is (N = Bx * C, H, W).
struct Geometry {
  int64_t Bx = 1, C = 1, H = 0, W = 0, Bm = 1, Hm = 1;
  bool hybrid() const { return Hm == 1; }
  int64_t rows() const { return Bx * C * H; }
};

inline Geometry check_mask(const Tensor& mask, const Tensor& x, int64_t Bx, const char* op) {
  Geometry g;
  g.H = x.size(-2);
  g.W = x.size(-1);
  g.Bx = Bx;
  check_same(mask, x, op, "mask", c10::toRealValueType(x.scalar_type()));
  TORCH_CHECK(mask.dim() == 3, op, ": mask must be (Bm, Hm, W) = (1 or ", Bx, ", 1 or ", g.H, ", ",
              g.W, "), got shape ", mask.sizes(), " (the Python wrapper normalises broadcastable masks)");
  TORCH_CHECK(mask.size(2) == g.W, op, ": mask has ", mask.size(2), " columns, the image has W = ", g.W);
  TORCH_CHECK(mask.size(1) == 1 || mask.size(1) == g.H, op, ": mask has ", mask.size(1),
              " rows; expected 1 (column mask) or H = ", g.H);
  TORCH_CHECK(mask.size(0) == 1 || mask.size(0) == Bx, op, ": mask batch is ", mask.size(0),
              "; expected 1 or the batch size ", Bx);
  g.Bm = mask.size(0);
  g.Hm = mask.size(1);
  return g;
}

inline int64_t batch_count(const Tensor& x) {
  int64_t n = 1;
  for (int64_t d = 0; d + 2 < x.dim(); ++d) n *= x.size(d);
  return n;
}

// Where the sampled columns of a column mask are: idx (Bm, K) lists them in ascending
// order, rows with fewer than K padded with unsampled columns (distinct, never blended);
// slot (Bm, W) maps a column to its position in idx or -1. Built on the host from the
// mask's Bm x W values with no ATen kernel launches. On CUDA that costs one
// device-to-host copy of the mask (the one synchronisation of the op: K sizes the
// buffers); idx and slot go back in one asynchronous copy from pinned memory.
struct ColumnPlan {
  Tensor idx, slot;
  int64_t K = 0;
};

inline ColumnPlan column_plan(const Tensor& mask, const Geometry& g) {
  const Tensor m = mask.reshape({g.Bm, g.W}).to(at::kCPU).to(at::kDouble).contiguous();
  const double* mv = m.data_ptr<double>();
  std::vector<int64_t> counts(g.Bm, 0);
  for (int64_t b = 0; b < g.Bm; ++b)
    for (int64_t j = 0; j < g.W; ++j) counts[b] += mv[b * g.W + j] != 0.0;
  ColumnPlan p;
  p.K = g.Bm == 0 ? 0 : *std::max_element(counts.begin(), counts.end());
  // idx then slot in one buffer, so that a CUDA mask needs one copy back
  const int64_t n_idx = g.Bm * p.K;
  Tensor packed = at::empty({n_idx + g.Bm * g.W}, at::TensorOptions(at::kLong).pinned_memory(mask.is_cuda()));
  int64_t* iv = packed.data_ptr<int64_t>();
  int64_t* sv = iv + n_idx;
  for (int64_t b = 0; b < g.Bm; ++b) {
    int64_t q = 0, pad = counts[b];
    for (int64_t j = 0; j < g.W; ++j) {
      const bool sampled = mv[b * g.W + j] != 0.0;
      sv[b * g.W + j] = sampled ? q : -1;
      if (sampled) iv[b * p.K + q++] = j;
      else if (pad < p.K) iv[b * p.K + pad++] = j;
    }
  }
  // non_blocking from pinned memory: ATen keeps the host block until the copy is done
  const Tensor on_device = packed.to(mask.device(), /*non_blocking=*/true);
  p.idx = on_device.narrow(0, 0, n_idx).view({g.Bm, p.K});
  p.slot = on_device.narrow(0, n_idx, g.Bm * g.W).view({g.Bm, g.W});
  return p;
}

template <typename T>
Frame<T> make_frame(const Geometry& g, const Tensor& mask, const c10::optional<Tensor>& lam) {
  Frame<T> f{};
  f.C = g.C;
  f.H = g.H;
  f.W = g.W;
  f.hybrid = g.hybrid();
  f.mask = mask.data_ptr<T>();
  f.Bm = g.Bm;
  f.Hm = g.Hm;
  f.n0 = 0;
  f.k0 = nullptr;
  f.idx = nullptr;
  f.K = 0;
  f.kcst = cx<T>(T(1), T(0));
  f.lam = lam.has_value() ? lam->data_ptr<T>() : nullptr;
  f.scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(g.hybrid() ? g.W : g.H * g.W)));
  return f;
}

// Hybrid path: the sampled columns the column passes visit, and the rest of F_{c,H}^-1.
template <typename T>
void attach_plan(Frame<T>& f, const Geometry& g, const ColumnPlan& plan) {
  f.idx = plan.idx.data_ptr<int64_t>();
  f.K = plan.K;
  f.kcst = centring_constant<T>(g.H) * static_cast<T>(1.0 / std::sqrt(static_cast<double>(g.H)));
}

inline std::vector<int64_t> fft_dims(const Geometry& g) {
  if (g.hybrid()) return {2};
  return {1, 2};
}

// ---------------------------------------------------------------- fft2c / ifft2c

template <class Backend>
Tensor centred_fft(const Tensor& x_in, bool forward) {
  const char* op = forward ? "fft2c" : "ifft2c";
  check_complex(x_in, op, "x");
  TORCH_CHECK(x_in.dim() >= 2, op, ": x must be (..., H, W), got shape ", x_in.sizes());
  const Tensor x = x_in.contiguous();
  if (x.numel() == 0) return at::empty_like(x);
  const int64_t H = x.size(-2), W = x.size(-1), N = x.numel() / (H * W);
  Tensor buf = at::empty({N, H, W}, x.options());
  AT_DISPATCH_COMPLEX_TYPES(x.scalar_type(), "masked_fft", [&] {
    using T = typename scalar_t::value_type;
    // F_c x = conj(c) conj(r) fft(conj(r) x);  F_c^-1 y = c r ifft(r y)
    const cx<T> scale(static_cast<T>(1.0 / std::sqrt(static_cast<double>(H * W))), T(0));
    PhaseScale<T> pre{x.data_ptr<cx<T>>(), buf.data_ptr<cx<T>>(), H, W, forward, scale};
    Backend::launch(pre, N * H, W);
    buf = fft_along<Backend>(buf, {1, 2}, forward);
    const cx<T> c = centring_constant<T>(H) * centring_constant<T>(W);
    PhaseScale<T> post{buf.data_ptr<cx<T>>(), buf.data_ptr<cx<T>>(), H, W, forward,
                       forward ? conj(c) : c};
    Backend::launch(post, N * H, W);
  });
  return buf.view(x.sizes());
}

// Images per chunk of the hybrid path (Backend::image_chunk): on the CPU a cache-sized
// chunk, so that every pass of a chunk meets its data in cache instead of streaming the
// batch through memory once per pass; on CUDA the whole batch.
template <class Backend>
int64_t image_chunk(int64_t N, int64_t H, int64_t W, const at::TensorOptions& opts) {
  const int64_t bytes = c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
  return Backend::image_chunk(N, H * W * bytes);
}

// Runs fn(c, n0, n1) for the image chunks c of [0, N) (chunk images each), in parallel
// on the CPU; returns the number of chunks.
template <class Backend, class Fn>
int64_t for_image_chunks(int64_t N, int64_t chunk, const Fn& fn) {
  const int64_t count = (N + chunk - 1) / chunk;
  Backend::for_each_range(count, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c, c * chunk, std::min(N, (c + 1) * chunk));
  });
  return count;
}

// (N, H, W) from fn(n0, n1), which returns images [n0, n1) as (n1 - n0, H, W): one call
// when chunk >= N, else the chunks run in parallel and are copied into place while
// still cached (Backend::store_chunk).
template <class Backend, class Fn>
Tensor by_image_chunks(int64_t N, int64_t chunk, int64_t H, int64_t W, const at::TensorOptions& opts,
                       const Fn& fn) {
  if (chunk >= N) return fn(0, N);
  Tensor out = at::empty({N, H, W}, opts);
  for_image_chunks<Backend>(N, chunk, [&](int64_t, int64_t n0, int64_t n1) {
    Backend::store_chunk(out.narrow(0, n0, n1 - n0), fn(n0, n1));
  });
  return out;
}

// ---------------------------------------------------------------- undersample

template <class Backend>
Tensor undersample(const Tensor& x_in, const Tensor& mask_in) {
  const char* op = "undersample";
  check_complex(x_in, op, "x");
  TORCH_CHECK(x_in.dim() >= 2, op, ": x must be (..., H, W), got shape ", x_in.sizes());
  const Tensor x = x_in.contiguous(), mask = mask_in.contiguous();
  Geometry g = check_mask(mask, x, batch_count(x), op);
  if (x.numel() == 0) return at::empty_like(x);
  const Tensor xv = x.view({g.Bx, g.H, g.W});
  Tensor out;
  AT_DISPATCH_COMPLEX_TYPES(x.scalar_type(), "masked_fft", [&] {
    using T = typename scalar_t::value_type;
    const Frame<T> f0 = make_frame<T>(g, mask, c10::nullopt);
    auto images = [&](int64_t n0, int64_t n1) {
      Tensor X = fft_along<Backend>(xv.narrow(0, n0, n1 - n0), fft_dims(g), true);
      Frame<T> f = f0;
      f.n0 = n0;
      ForwardMid<T> mid{f, X.data_ptr<cx<T>>(), /*undersample=*/true};
      Backend::launch(mid, (n1 - n0) * g.H, g.W);
      return fft_along<Backend>(X, fft_dims(g), false);
    };
    out = g.hybrid() ? by_image_chunks<Backend>(g.Bx, image_chunk<Backend>(g.Bx, g.H, g.W, x.options()), g.H,
                                                g.W, x.options(), images)
                     : images(0, g.Bx);
  });
  return out.view(x.sizes());
}

// ---------------------------------------------------------------- data consistency

struct DcInputs {
  Tensor x, k0, mask, sens, lam;  // contiguous; sens/lam undefined when absent
  Geometry g;
};

inline DcInputs check_dc(const Tensor& x, const Tensor& k0, const Tensor& mask,
                         const c10::optional<Tensor>& sens, const c10::optional<Tensor>& lam,
                         const char* op) {
  check_complex(x, op, "x");
  TORCH_CHECK(x.dim() >= 2, op, ": x must be (..., H, W), got shape ", x.sizes());
  check_same(k0, x, op, "k0", x.scalar_type());
  DcInputs in;
  int64_t Bx = batch_count(x), C = 1;
  if (sens.has_value()) {
    check_same(*sens, x, op, "sens", x.scalar_type());
    TORCH_CHECK(x.dim() == 3, op, ": multi-coil x must be (B, H, W), got shape ", x.sizes());
    TORCH_CHECK(sens->dim() == 4 && sens->size(0) == x.size(0) && sens->size(2) == x.size(1) &&
                    sens->size(3) == x.size(2),
                op, ": sens must be (B, C, H, W) = (", x.size(0), ", C, ", x.size(1), ", ", x.size(2),
                ") for x of shape ", x.sizes(), ", got ", sens->sizes());
    TORCH_CHECK(k0.sizes() == sens->sizes(), op, ": k0 must be (B, C, H, W) like sens ", sens->sizes(),
                ", got ", k0.sizes());
    C = sens->size(1);
    in.sens = sens->contiguous();
  } else {
    TORCH_CHECK(k0.sizes() == x.sizes(), op, ": k0 must have the shape of x ", x.sizes(), ", got ",
                k0.sizes());
  }
  if (lam.has_value()) {
    check_same(*lam, x, op, "lam", c10::toRealValueType(x.scalar_type()));
    TORCH_CHECK(lam->numel() == 1, op, ": lam must be a single value (0-dim tensor), got shape ",
                lam->sizes());
    in.lam = lam->contiguous();
  }
  const Tensor m = mask.contiguous();
  in.g = check_mask(m, x, Bx, op);
  in.g.C = C;
  in.x = x.contiguous();
  in.k0 = k0.contiguous();
  in.mask = m;
  return in;
}

inline c10::optional<Tensor> opt(const Tensor& t) {
  return t.defined() ? c10::optional<Tensor>(t) : c10::nullopt;
}

// S_c img (multi-coil) or img itself for coil images [n0, n1) (n = b * C + c), as
// (n1 - n0, H, W); n1 < 0: to the last one.
template <class Backend, typename T>
Tensor coil_images(const DcInputs& in, const Tensor& img, int64_t n0 = 0, int64_t n1 = -1) {
  const Geometry& g = in.g;
  if (n1 < 0) n1 = g.Bx * g.C;
  const int64_t count = n1 - n0;
  if (!in.sens.defined()) return img.view({g.Bx, g.H, g.W}).narrow(0, n0, count);
  Tensor e = at::empty({count, g.H, g.W}, img.options());
  Expand<T> ex{in.sens.data_ptr<cx<T>>() + n0 * g.H * g.W, img.data_ptr<cx<T>>(), e.data_ptr<cx<T>>(),
               g.C, g.H, g.W, n0};
  Backend::launch(ex, count * g.H, g.W);
  return e;
}

// sum_c conj(S_c) u_c (multi-coil) or u itself, shaped like x.
template <class Backend, typename T>
Tensor coil_combine(const DcInputs& in, const Tensor& u) {
  const Geometry& g = in.g;
  if (!in.sens.defined()) return u.view(in.x.sizes());
  Tensor out = at::empty(in.x.sizes(), u.options());
  Combine<T> cb{in.sens.data_ptr<cx<T>>(), u.data_ptr<cx<T>>(), out.data_ptr<cx<T>>(), g.C, g.H, g.W};
  Backend::launch(cb, g.Bx * g.H, g.W);
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
  const int64_t N = g.Bx * g.C, HW = g.H * g.W;
  if (chunk >= N) return coil_combine<Backend, T>(in, fn(0, N));
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
        CombineAdd<T> add{in.sens.data_ptr<cx<T>>() + n * HW, u.data_ptr<cx<T>>() + (n - n0) * HW,
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

// h0 of coil images [n0, n1): ifft_H of their gathered, pre-phased sampled columns,
// (n1 - n0, K, H); points f at it (f.k0, f.n0). Needs f.K > 0.
template <class Backend, typename T>
Tensor chunk_measurement(const DcInputs& in, Frame<T>& f, int64_t n0, int64_t n1) {
  const Geometry& g = in.g;
  const int64_t count = n1 - n0;
  Tensor buf = at::empty({count, f.K, g.H}, in.x.options());
  GatherColumns<T> gc{in.k0.data_ptr<cx<T>>() + n0 * g.H * g.W, f.idx, buf.data_ptr<cx<T>>(),
                      g.C, g.H, g.W, f.K, g.Bm, n0};
  Backend::launch(gc, count * row_blocks(g.H), f.K);
  Tensor meas = at::_fft_c2c(buf, {2}, kFftUnnormalised, /*forward=*/false);
  TORCH_INTERNAL_ASSERT(meas.is_contiguous());
  f.k0 = meas.data_ptr<cx<T>>();
  f.n0 = n0;
  return meas;
}

// Hybrid DC forward of coil images [n0, n1), returned as (n1 - n0, H, W):
// U = ifft_W(blend(fft_W(S x), ifft_H(gathered k0 columns))) / W. The CPU runs it one
// cache-sized chunk of images per task (Backend::image_chunk), so that the transforms,
// the gather and the blend of an image meet it in cache instead of streaming the whole
// batch through memory once per pass; on CUDA it is one call over the batch.
template <class Backend, typename T>
Tensor hybrid_dc_images(const DcInputs& in, Frame<T> f, int64_t n0, int64_t n1) {
  const Geometry& g = in.g;
  const int64_t count = n1 - n0;
  const Tensor img = coil_images<Backend, T>(in, in.x, n0, n1);
  Tensor X = at::_fft_c2c(img, {2}, kFftUnnormalised, /*forward=*/true);
  TORCH_INTERNAL_ASSERT(X.is_contiguous());
  if (f.K > 0) {
    const Tensor meas = chunk_measurement<Backend, T>(in, f, n0, n1);
    ColumnBlend<T> blend{f, X.data_ptr<cx<T>>()};
    Backend::launch(blend, count * row_blocks(g.H), f.K);
  }
  return at::_fft_c2c(X, {2}, kFftByN, /*forward=*/false);
}

template <class Backend>
Tensor data_consistency(const Tensor& x_, const Tensor& k0_, const Tensor& mask_,
                        const c10::optional<Tensor>& sens_, const c10::optional<Tensor>& lam_) {
  const DcInputs in = check_dc(x_, k0_, mask_, sens_, lam_, "data_consistency");
  const Geometry& g = in.g;
  if (in.x.numel() == 0 || in.k0.numel() == 0) return at::zeros_like(in.x);
  Tensor out;
  AT_DISPATCH_COMPLEX_TYPES(in.x.scalar_type(), "data_consistency", [&] {
    using T = typename scalar_t::value_type;
    Frame<T> f = make_frame<T>(g, in.mask, opt(in.lam));
    if (g.hybrid()) {
      const ColumnPlan plan = column_plan(in.mask, g);
      attach_plan(f, g, plan);
      auto images = [&](int64_t n0, int64_t n1) { return hybrid_dc_images<Backend, T>(in, f, n0, n1); };
      const int64_t chunk = image_chunk<Backend>(g.Bx * g.C, g.H, g.W, in.x.options());
      out = in.sens.defined()
                ? combined_by_image_chunks<Backend, T>(in, chunk, images)
                : by_image_chunks<Backend>(g.Bx, chunk, g.H, g.W, in.x.options(), images).view(in.x.sizes());
    } else {
      Tensor X = fft_along<Backend>(coil_images<Backend, T>(in, in.x), fft_dims(g), true);
      f.k0 = in.k0.data_ptr<cx<T>>();
      ForwardMid<T> mid{f, X.data_ptr<cx<T>>(), /*undersample=*/false};
      Backend::launch(mid, g.rows(), g.W);
      out = coil_combine<Backend, T>(in, fft_along<Backend>(X, fft_dims(g), false));
    }
  });
  return out;
}

}  // namespace mfft
}  // namespace fastfn
