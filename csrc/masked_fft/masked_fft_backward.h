// Host-side orchestration of data_consistency_backward, for every device (see
// masked_fft_impl.h for the Backend contract): the 2D path over the whole batch, the
// hybrid path in image chunks like the forward.
#pragma once

#include <array>
#include <tuple>

#include "masked_fft/masked_fft_impl.h"

namespace fastfn {
namespace mfft {

// Backward of the 2D path over the whole batch: (grad_x, grad_k0, grad_S, grad_w), each
// undefined unless asked for.
template <class Backend, typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor> dc_backward_2d(const DcInputs& in, const Tensor& grad, bool need_x,
                                                          bool need_k0, bool need_s, bool need_lam) {
  const Geometry& g = in.g;
  Frame<T> f = make_frame<T>(g, in.mask, opt(in.lam));
  const bool need_meas = need_lam || need_s, want_a = need_x || need_s;
  f.k0 = in.k0.data_ptr<cx<T>>();
  Tensor G = fft_along<Backend>(coil_images<Backend, T>(in, grad), fft_dims(g), true);
  Tensor X;
  if (need_meas) X = fft_along<Backend>(coil_images<Backend, T>(in, in.x), fft_dims(g), true);
  const int64_t N = g.Bx * g.C;
  Tensor gx, gk0, gs, gw, contrib;
  if (need_k0) gk0 = at::empty(in.k0.sizes(), in.x.options());
  if (need_lam) contrib = at::empty({N, g.H, g.W}, in.lam.options());
  BackwardMid<T> pass{f,
                      G.data_ptr<cx<T>>(),
                      X.defined() ? X.data_ptr<cx<T>>() : nullptr,
                      need_k0 ? gk0.data_ptr<cx<T>>() : nullptr,
                      need_lam ? contrib.data_ptr<T>() : nullptr,
                      want_a,
                      need_s};
  Backend::launch(pass, g.rows(), g.W);
  Tensor a;
  if (want_a) a = fft_along<Backend>(G, fft_dims(g), false);
  if (need_x) gx = coil_combine<Backend, T>(in, a);
  if (need_s) {
    const Tensor u = fft_along<Backend>(X, fft_dims(g), false);
    gs = at::empty_like(in.sens);
    GradSens<T> gsp{grad.data_ptr<cx<T>>(), u.data_ptr<cx<T>>(), a.data_ptr<cx<T>>(),
                    in.x.data_ptr<cx<T>>(), gs.data_ptr<cx<T>>(), g.C, g.H, g.W, 0};
    Backend::launch(gsp, g.rows(), g.W);
  }
  if (need_lam) gw = contrib.sum();
  return {gx, gk0, gs, gw};
}

// Backward of the hybrid path, in image chunks like the forward (by_image_chunks): each
// chunk transforms its coil images of grad (and of x when grad_S or grad_lam needs the
// forward's k-space), runs ColumnBackward over its sampled columns, and writes its slices
// of grad_S and grad_k0 in place; grad_x is assembled or coil-combined like the forward
// output, grad_w summed over per-chunk partial sums.
template <class Backend, typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor> hybrid_dc_backward(const DcInputs& in, const Tensor& grad,
                                                              bool need_x, bool need_k0, bool need_s,
                                                              bool need_lam) {
  const Geometry& g = in.g;
  const int64_t N = g.Bx * g.C, HW = g.H * g.W;
  Frame<T> f0 = make_frame<T>(g, in.mask, opt(in.lam));
  const ColumnPlan plan = column_plan(in.mask, g);
  attach_plan(f0, g, plan);
  const bool need_meas = (need_lam || need_s) && f0.K > 0, want_a = need_x || need_s;
  Tensor gx, gk0, gs, gw;
  if (need_k0) gk0 = at::empty(in.k0.sizes(), in.x.options());
  if (need_s) gs = at::empty_like(in.sens);
  const int64_t chunk = image_chunk<Backend>(N, g.H, g.W, in.x.options());
  Tensor partial_w;
  if (need_lam) partial_w = at::zeros({(N + chunk - 1) / chunk}, in.lam.options());
  // Returns a = F^-1 of the chunk's blended grad spectrum (undefined unless want_a).
  auto images = [&](int64_t c, int64_t n0, int64_t n1) {
    const int64_t count = n1 - n0, tiles = count * row_blocks(g.H);
    Frame<T> f = f0;
    f.n0 = n0;
    Tensor G = at::_fft_c2c(coil_images<Backend, T>(in, grad, n0, n1), {2}, kFftUnnormalised, true);
    Tensor X, meas, kbuf, contrib;
    if (need_lam || need_s) X = at::_fft_c2c(coil_images<Backend, T>(in, in.x, n0, n1), {2},
                                             kFftUnnormalised, true);
    if (need_meas) meas = chunk_measurement<Backend, T>(in, f, n0, n1);
    if (need_k0) kbuf = at::empty({count, f.K, g.H}, in.x.options());
    if (need_lam) contrib = at::empty({count, g.H, f.K}, in.lam.options());
    ColumnBackward<T> pass{f,
                           G.data_ptr<cx<T>>(),
                           X.defined() ? X.data_ptr<cx<T>>() : nullptr,
                           need_k0 ? kbuf.data_ptr<cx<T>>() : nullptr,
                           need_lam ? contrib.data_ptr<T>() : nullptr,
                           want_a,
                           need_s};
    Backend::launch(pass, tiles, f.K);
    Tensor a;
    if (want_a) a = at::_fft_c2c(G, {2}, kFftByN, /*forward=*/false);
    if (need_s) {
      const Tensor u = at::_fft_c2c(X, {2}, kFftByN, /*forward=*/false);
      GradSens<T> gsp{grad.data_ptr<cx<T>>(), u.data_ptr<cx<T>>(), a.data_ptr<cx<T>>(),
                      in.x.data_ptr<cx<T>>(), gs.data_ptr<cx<T>>() + n0 * HW, g.C, g.H, g.W, n0};
      Backend::launch(gsp, count * g.H, g.W);
    }
    if (need_k0) {
      Tensor out = gk0.view({N, g.H, g.W}).narrow(0, n0, count);
      if (f.K == 0) {
        out.zero_();
      } else {
        const Tensor kf = at::_fft_c2c(kbuf, {2}, kFftUnnormalised, /*forward=*/true);
        ScatterColumns<T> sc{kf.data_ptr<cx<T>>(), plan.slot.data_ptr<int64_t>(), out.data_ptr<cx<T>>(),
                             g.C, g.H, g.W, f.K, g.Bm, n0, conj(f.kcst)};
        Backend::launch(sc, tiles, g.W);
      }
    }
    if (need_lam) partial_w.select(0, c).copy_(contrib.sum());
    return a;
  };
  if (!need_x) {
    for_image_chunks<Backend>(N, chunk, images);
  } else if (in.sens.defined()) {
    gx = combined_by_image_chunks<Backend, T>(in, chunk, [&](int64_t n0, int64_t n1) {
      return images(n0 / chunk, n0, n1);
    });
  } else {
    gx = by_image_chunks<Backend>(N, chunk, g.H, g.W, in.x.options(), [&](int64_t n0, int64_t n1) {
      return images(n0 / chunk, n0, n1);
    }).view(in.x.sizes());
  }
  if (need_lam) gw = partial_w.sum();
  return {gx, gk0, gs, gw};
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
    Tensor rx, rk0, rs, gw;  // gw: grad of the weight w = lam / (1 + lam)
    std::tie(rx, rk0, rs, gw) =
        g.hybrid() ? hybrid_dc_backward<Backend, T>(in, grad, need_x, need_k0, need_s, need_lam)
                   : dc_backward_2d<Backend, T>(in, grad, need_x, need_k0, need_s, need_lam);
    if (need_x) gx = rx;
    if (need_k0) gk0 = rk0;
    if (need_s) gs = rs;
    if (need_lam) glam = (gw / (in.lam.reshape({}) + 1).square()).reshape(in.lam.sizes());
  });
  return {gx, gk0, gs, glam};
}

}  // namespace mfft
}  // namespace fastfn
