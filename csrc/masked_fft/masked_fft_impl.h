// Host-side orchestration of the masked-FFT ops, written once for every device:
// argument checks, buffers, ATen's FFTs (pocketfft/MKL on CPU, cuFFT with ATen's
// plan cache on CUDA) and the pointwise passes of masked_fft.h. `Backend::launch(f,
// rows, inner)` runs functor f over rows x inner elements on the device; the CPU and
// CUDA translation units each supply one and register the ops for their key.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <array>
#include <cmath>
#include <tuple>
#include <vector>

#include "masked_fft/masked_fft.h"

namespace fastfn {
namespace mfft {

using at::Tensor;

// ATen's fft normalisation enum value for "none": the passes apply 1/sqrt(N).
constexpr int64_t kFftUnnormalised = 0;

// Transforms along the last dim(s) come back contiguous (checked); one along an inner
// dim may come back with permuted strides, which the column passes read as they are.
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

// Where the sampled columns of a column mask are: idx (Bm, K) lists them (padded with
// unsampled columns whose gathered values are never read), slot (Bm, W) maps a column to its position in idx or -1. On CUDA the
// count K costs one small device-to-host copy.
struct ColumnPlan {
  Tensor idx, slot;
  int64_t K = 0;
};

inline ColumnPlan column_plan(const Tensor& mask, const Geometry& g) {
  const Tensor nz = mask.reshape({g.Bm, g.W}).ne(0);
  ColumnPlan p;
  p.K = nz.sum(1).max().item<int64_t>();
  const Tensor order = std::get<1>(at::sort(nz.logical_not().to(at::kInt), /*stable=*/true, /*dim=*/1,
                                            /*descending=*/false));
  // Sampled columns first, in order; rows with fewer than K list unsampled (valid, unread) ones after.
  p.idx = order.narrow(1, 0, p.K).contiguous();
  p.slot = at::where(nz, nz.to(at::kLong).cumsum(1) - 1, at::full_like(nz, -1, at::kLong)).contiguous();
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
  f.k0 = nullptr;
  f.slot = nullptr;
  f.K = 0;
  f.ks_n = f.ks_h = f.ks_k = 0;
  f.kcst = cx<T>(T(1), T(0));
  f.lam = lam.has_value() ? lam->data_ptr<T>() : nullptr;
  f.scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(g.hybrid() ? g.W : g.H * g.W)));
  return f;
}

// The measurement as the mid passes read it: k0 itself (2D path) or, on the hybrid
// path, ifft_H of its gathered, pre-phased sampled columns (only when `gather`; the
// backward pass for grad_k0 alone needs just the column plan). Keeps its buffers alive.
template <typename T>
struct Measurement {
  Tensor data, slot;
};

template <class Backend, typename T>
Measurement<T> attach_measurement(Frame<T>& f, const Geometry& g, const Tensor& k0,
                                  const Tensor& mask, bool gather = true) {
  Measurement<T> m;
  if (!g.hybrid()) {
    m.data = k0;
    f.k0 = k0.data_ptr<cx<T>>();
    return m;
  }
  const ColumnPlan plan = column_plan(mask, g);
  const int64_t N = g.Bx * g.C;
  // (N, H, K): gathered row by row, transformed along H (dim 1) in that layout.
  Tensor buf = at::empty({gather ? N : 0, g.H, plan.K}, k0.options());
  if (gather && plan.K > 0) {
    GatherColumns<T> gather{k0.data_ptr<cx<T>>(), plan.idx.data_ptr<int64_t>(), buf.data_ptr<cx<T>>(),
                            g.C, g.H, g.W, plan.K, g.Bm};
    Backend::launch(gather, N * g.H, plan.K);
    buf = fft_strided(buf, {1}, /*forward=*/false);
  }
  m.data = buf;
  m.slot = plan.slot;
  f.k0 = buf.data_ptr<cx<T>>();
  f.ks_n = buf.stride(0);
  f.ks_h = buf.stride(1);
  f.ks_k = buf.stride(2);
  f.slot = plan.slot.data_ptr<int64_t>();
  f.K = plan.K;
  f.kcst = centring_constant<T>(g.H) * static_cast<T>(1.0 / std::sqrt(static_cast<double>(g.H)));
  return m;
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
  Tensor X = fft_along<Backend>(xv, fft_dims(g), true);
  AT_DISPATCH_COMPLEX_TYPES(x.scalar_type(), "masked_fft", [&] {
    using T = typename scalar_t::value_type;
    Frame<T> f = make_frame<T>(g, mask, c10::nullopt);
    ForwardMid<T> mid{f, X.data_ptr<cx<T>>(), /*undersample=*/true};
    Backend::launch(mid, g.rows(), g.W);
  });
  return fft_along<Backend>(X, fft_dims(g), false).view(x.sizes());
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

// S_c x per coil (multi-coil) or x itself, as (N, H, W).
template <class Backend, typename T>
Tensor coil_images(const DcInputs& in, const Tensor& img) {
  const Geometry& g = in.g;
  if (!in.sens.defined()) return img.view({g.Bx, g.H, g.W});
  Tensor e = at::empty({g.Bx * g.C, g.H, g.W}, img.options());
  Expand<T> ex{in.sens.data_ptr<cx<T>>(), img.data_ptr<cx<T>>(), e.data_ptr<cx<T>>(), g.C, g.H, g.W};
  Backend::launch(ex, g.rows(), g.W);
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
    const Measurement<T> meas = attach_measurement<Backend, T>(f, g, in.k0, in.mask);
    Tensor X = fft_along<Backend>(coil_images<Backend, T>(in, in.x), fft_dims(g), true);
    ForwardMid<T> mid{f, X.data_ptr<cx<T>>(), /*undersample=*/false};
    Backend::launch(mid, g.rows(), g.W);
    out = coil_combine<Backend, T>(in, fft_along<Backend>(X, fft_dims(g), false));
  });
  return out;
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> data_consistency_backward(
    const Tensor& grad_, const Tensor& x_, const Tensor& k0_, const Tensor& mask_,
    const c10::optional<Tensor>& sens_, const c10::optional<Tensor>& lam_,
    std::array<bool, 4> output_mask) {
  const char* op = "data_consistency_backward";
  const DcInputs in = check_dc(x_, k0_, mask_, sens_, lam_, op);
  check_same(grad_, in.x, op, "grad", in.x.scalar_type());
  TORCH_CHECK(grad_.sizes() == in.x.sizes(), op, ": grad must have the shape of x ", in.x.sizes(),
              ", got ", grad_.sizes());
  const Geometry& g = in.g;
  const bool need_x = output_mask[0], need_k0 = output_mask[1];
  const bool need_s = output_mask[2] && in.sens.defined();
  const bool need_lam = output_mask[3] && in.lam.defined();
  const Tensor grad = grad_.contiguous();
  Tensor gx = at::empty({0}, in.x.options()), gk0 = at::empty({0}, in.x.options());
  Tensor gs = at::empty({0}, in.x.options());
  Tensor glam = at::empty({0}, in.x.options().dtype(c10::toRealValueType(in.x.scalar_type())));
  if (in.x.numel() == 0 || in.k0.numel() == 0) {
    if (need_x) gx = at::zeros_like(in.x);
    if (need_k0) gk0 = at::zeros_like(in.k0);
    if (need_s) gs = at::zeros_like(in.sens);
    if (need_lam) glam = at::zeros_like(in.lam);
    return {gx, gk0, gs, glam};
  }
  if (!(need_x || need_k0 || need_s || need_lam)) return {gx, gk0, gs, glam};
  AT_DISPATCH_COMPLEX_TYPES(in.x.scalar_type(), "data_consistency_backward", [&] {
    using T = typename scalar_t::value_type;
    Frame<T> f = make_frame<T>(g, in.mask, opt(in.lam));
    const bool need_meas = need_lam || need_s;
    Measurement<T> meas;
    if (need_meas || (need_k0 && g.hybrid()))
      meas = attach_measurement<Backend, T>(f, g, in.k0, in.mask, /*gather=*/need_meas);
    Tensor G = fft_along<Backend>(coil_images<Backend, T>(in, grad), fft_dims(g), true);
    Tensor X;
    if (need_meas) X = fft_along<Backend>(coil_images<Backend, T>(in, in.x), fft_dims(g), true);
    Tensor kbuf, contrib;
    if (need_k0) {
      kbuf = g.hybrid() ? at::zeros({g.Bx * g.C, g.H, f.K}, in.x.options())
                        : at::empty({g.Bx * g.C, g.H, g.W}, in.x.options());
    }
    if (need_lam) contrib = at::empty({g.Bx * g.C, g.H, g.W}, glam.options());
    const bool want_a = need_x || need_s;
    BackwardMid<T> mid{f,
                       G.data_ptr<cx<T>>(),
                       X.defined() ? X.data_ptr<cx<T>>() : nullptr,
                       need_k0 ? kbuf.data_ptr<cx<T>>() : nullptr,
                       need_lam ? contrib.data_ptr<T>() : nullptr,
                       want_a,
                       need_s};
    Backend::launch(mid, g.rows(), g.W);
    Tensor a;
    if (want_a) a = fft_along<Backend>(G, fft_dims(g), false);
    if (need_x) gx = coil_combine<Backend, T>(in, a);
    if (need_s) {
      const Tensor u = fft_along<Backend>(X, fft_dims(g), false);
      gs = at::empty_like(in.sens);
      GradSens<T> gsp{grad.data_ptr<cx<T>>(), u.data_ptr<cx<T>>(), a.data_ptr<cx<T>>(),
                      in.x.data_ptr<cx<T>>(), gs.data_ptr<cx<T>>(), g.C, g.H, g.W};
      Backend::launch(gsp, g.rows(), g.W);
    }
    if (need_k0) {
      if (!g.hybrid()) {
        gk0 = kbuf.view(in.k0.sizes());
      } else {
        if (f.K > 0) kbuf = fft_strided(kbuf, {1}, /*forward=*/true);
        gk0 = at::empty(in.k0.sizes(), in.k0.options());
        const cx<T> cst = conj(centring_constant<T>(g.H)) *
                          static_cast<T>(1.0 / std::sqrt(static_cast<double>(g.H)));
        ScatterColumns<T> sc{kbuf.data_ptr<cx<T>>(), kbuf.stride(0), kbuf.stride(1), kbuf.stride(2),
                             f.slot, gk0.data_ptr<cx<T>>(), g.C, g.H, g.W, g.Bm, cst};
        Backend::launch(sc, g.rows(), g.W);
      }
    }
    if (need_lam) {
      const Tensor gw = contrib.sum();
      glam = (gw / (in.lam.reshape({}) + 1).square()).reshape(in.lam.sizes());
    }
  });
  return {gx, gk0, gs, glam};
}

}  // namespace mfft
}  // namespace fastfn
