// Host code of data_consistency_backward, for every device (the Backend contract is in
// masked_fft_schedule.h): the 2D path over the whole batch, the column path in image
// chunks like the forward.
#pragma once

#include <array>
#include <tuple>

#include "masked_fft/masked_fft_forward.h"

namespace fastfn {
namespace mfft {

// What the caller asks for.
struct WantedGrads {
  bool x, k0, sens, lam;
};

// (grad_x, grad_k0, grad_S, grad_w), each undefined unless wanted; w = lam / (1 + lam).
using DcGrads = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// The 2D path over the whole batch.
template <class Backend, typename T>
DcGrads dc_backward_2d(const DcInputs& in, const Tensor& grad, WantedGrads want) {
  const Geometry& g = in.g;
  const bool need_x_spectrum = want.lam || want.sens, need_adjoint = want.x || want.sens;
  Tensor G = fft_along<Backend>(coil_images<Backend, T>(in, grad), spectrum_dims(g), true);
  Tensor X;
  if (need_x_spectrum) X = fft_along<Backend>(coil_images<Backend, T>(in, in.x), spectrum_dims(g), true);
  Tensor gx, gk0, gs, gw, weight_terms;
  if (want.k0) gk0 = at::empty(in.k0.sizes(), in.x.options());
  if (want.lam) weight_terms = at::empty({g.images(), g.H, g.W}, in.lam.options());
  const PhaseTables<T> ph = phase_tables<Backend, T>(g.H, g.W, in.x.options());
  DcBackward2d<T> pass{frame_2d<T>(in, ph),
                       G.data_ptr<cx<T>>(),
                       X.defined() ? X.data_ptr<cx<T>>() : nullptr,
                       want.k0 ? gk0.data_ptr<cx<T>>() : nullptr,
                       want.lam ? weight_terms.data_ptr<T>() : nullptr,
                       /*adjoint_in_place=*/need_adjoint,
                       /*output_in_place=*/want.sens};
  Backend::launch(pass, g.images() * g.H, g.W);
  Tensor a;
  if (need_adjoint) a = fft_along<Backend>(G, spectrum_dims(g), false);
  if (want.x) gx = coil_combine<Backend, T>(in, a);
  if (want.sens) {
    const Tensor u = fft_along<Backend>(X, spectrum_dims(g), false);
    gs = at::empty_like(in.sens);
    SensGrad<T> sens_grad{grad.data_ptr<cx<T>>(), u.data_ptr<cx<T>>(), a.data_ptr<cx<T>>(),
                          in.x.data_ptr<cx<T>>(), gs.data_ptr<cx<T>>(), g.C, g.H, g.W, 0, T(1)};
    Backend::launch(sens_grad, g.images() * g.H, g.W);
  }
  if (want.lam) gw = weight_terms.sum();
  return {gx, gk0, gs, gw};
}

// The column path, in image chunks like the forward (by_image_chunks): each chunk
// transforms its coil images of grad (and of x when grad_S or grad_lam needs the
// forward's spectrum), runs DcBackwardColumns over its sampled columns, and writes its
// slices of grad_S and grad_k0 in place; grad_x is assembled or coil-combined like the
// forward output, grad_w summed over per-chunk partial sums.
template <class Backend, typename T>
DcGrads dc_backward_columns(const DcInputs& in, const Tensor& grad, WantedGrads want) {
  const Geometry& g = in.g;
  const int64_t N = g.images(), HW = g.H * g.W;
  const ColumnPlan plan = column_plan(in.mask, g);
  const PhaseTables<T> ph = phase_tables<Backend, T>(g.H, g.W, in.x.options());
  const ColumnFrame<T> f0 = column_frame<T>(in, plan, ph);
  // single-coil, grad_w's x part comes from the image pass SoftDcImage (Parseval), so the
  // spectrum of x is not computed: one FFT fewer than the blend's own form
  const bool complement = want.lam && !in.sens.defined();
  const bool need_x_spectrum = want.sens || (want.lam && !complement);
  const bool need_adjoint = want.x || want.sens || complement;
  const bool need_meas = (need_x_spectrum || complement) && f0.K > 0;
  const Tensor meas = need_meas ? column_measurement<Backend, T>(in, f0, plan) : Tensor();
  // the 1/W of the inverse FFTs along W goes into the passes after them (multi-coil: the
  // sensitivity gradient and the coil combine of grad_x) on a backend that folds it;
  // single-coil nothing follows, so it goes into the adjoint blend before (DcAdjointRows)
  const bool fold = Backend::kFoldInverseScale && in.sens.defined();
  const bool fold_before = Backend::kFoldInverseScale && !in.sens.defined() && need_adjoint && !complement;
  Tensor gx, gk0, gs, gw;
  if (want.k0) gk0 = at::empty(in.k0.sizes(), in.x.options());
  if (want.sens) gs = at::empty_like(in.sens);
  const int64_t chunk = image_chunk<Backend>(N, g.H, g.W, in.x.options());
  Tensor partial_w;
  if (want.lam) partial_w = at::zeros({(N + chunk - 1) / chunk}, in.lam.options());
  // Returns a = F^-1 of the chunk's blended grad spectrum (undefined unless need_adjoint).
  auto images = [&](int64_t c, int64_t n0, int64_t n1) {
    const int64_t count = n1 - n0, tiles = count * row_blocks<Backend::kColumnTileRows>(g.H);
    ColumnFrame<T> f = f0;
    frame_chunk(f, meas, n0);
    Tensor G = at::_fft_c2c(coil_images<Backend, T>(in, grad, n0, n1), {2}, kFftUnnormalised, true);
    Tensor X, kbuf, weight_terms;
    if (need_x_spectrum) {
      X = at::_fft_c2c(coil_images<Backend, T>(in, in.x, n0, n1), {2}, kFftUnnormalised, true);
    }
    if (want.k0) kbuf = at::empty({count, f.K, g.H}, in.x.options());
    if (want.lam) weight_terms = at::empty({count, g.H, f.K}, in.lam.options());
    DcBackwardColumns<T, Backend::kColumnTileRows> pass{f,
                              G.data_ptr<cx<T>>(),
                              X.defined() ? X.data_ptr<cx<T>>() : nullptr,
                              want.k0 ? kbuf.data_ptr<cx<T>>() : nullptr,
                              want.lam ? weight_terms.data_ptr<T>() : nullptr,
                              /*adjoint_in_place=*/need_adjoint && !fold_before && !complement,
                              /*output_in_place=*/want.sens, complement};
    if (want.k0 || want.lam || pass.adjoint_in_place || pass.output_in_place) Backend::launch(pass, tiles, f.K);
    if (fold_before) {
      DcAdjointRows<T> adjoint{f, G.data_ptr<cx<T>>(), T(1) / T(g.W)};
      Backend::launch(adjoint, count * g.H, g.W);
    }
    Tensor a;
    if (need_adjoint) {
      const bool unnormalised = fold || fold_before || (complement && Backend::kFoldInverseScale);
      a = at::_fft_c2c(G, {2}, unnormalised ? kFftUnnormalised : kFftByN, /*forward=*/false);
    }
    Tensor image_terms;
    if (complement) {
      image_terms = at::empty({count, g.H, g.W}, in.lam.options());
      SoftDcImage<T> soft{grad.data_ptr<cx<T>>(), in.x.data_ptr<cx<T>>(), a.data_ptr<cx<T>>(),
                          image_terms.data_ptr<T>(), lam_ptr<T>(in), g.H, g.W, n0,
                          Backend::kFoldInverseScale ? T(1) / T(g.W) : T(1), want.x};
      Backend::launch(soft, count * g.H, g.W);
    }
    if (want.sens) {
      const Tensor u = at::_fft_c2c(X, {2}, fold ? kFftUnnormalised : kFftByN, /*forward=*/false);
      SensGrad<T> sens_grad{grad.data_ptr<cx<T>>(), u.data_ptr<cx<T>>(), a.data_ptr<cx<T>>(),
                            in.x.data_ptr<cx<T>>(), gs.data_ptr<cx<T>>() + n0 * HW, g.C, g.H, g.W, n0,
                            fold ? T(1) / T(g.W) : T(1)};
      Backend::launch(sens_grad, count * g.H, g.W);
    }
    if (want.k0) {
      Tensor out = gk0.view({N, g.H, g.W}).narrow(0, n0, count);
      if (f.K == 0) {
        out.zero_();
      } else {
        const Tensor kf = at::_fft_c2c(kbuf, {2}, kFftUnnormalised, /*forward=*/true);
        ScatterColumns<T, Backend::kColumnTileRows> scatter{
            kf.data_ptr<cx<T>>(), plan.slot.data_ptr<int64_t>(), out.data_ptr<cx<T>>(), g.C, g.H, g.W, f.K, g.Bm, n0,
            conj(f.meas_constant), f.rh};
        Backend::launch(scatter, tiles, g.W);
      }
    }
    if (want.lam) partial_w.select(0, c).copy_(complement ? weight_terms.sum() - image_terms.sum() : weight_terms.sum());
    return a;
  };
  auto chunk_images = [&](int64_t n0, int64_t n1) { return images(n0 / chunk, n0, n1); };
  if (!want.x) {
    for_image_chunks<Backend>(N, chunk, images);
  } else if (in.sens.defined()) {
    gx = combined_by_image_chunks<Backend, T>(in, chunk, chunk_images);
  } else {
    gx = by_image_chunks<Backend>(N, chunk, g.H, g.W, in.x.options(), chunk_images).view(in.x.sizes());
  }
  if (want.lam) gw = partial_w.sum();
  return {gx, gk0, gs, gw};
}

template <class Backend>
DcGrads data_consistency_backward(const Tensor& grad_in, const Tensor& x, const Tensor& k0, const Tensor& mask,
                                  const c10::optional<Tensor>& sens, const c10::optional<Tensor>& lam,
                                  std::array<bool, 4> output_mask) {
  const char* op = "data_consistency_backward";
  const Geometry g = check_dc(x, k0, mask, sens, lam, op);
  check_grad(grad_in, x, op);
  const typename Backend::DeviceGuard guard(x.device());
  const DcInputs in = dc_inputs(g, x, k0, mask, sens, lam);
  const WantedGrads want{output_mask[0], output_mask[1], output_mask[2] && in.sens.defined(),
                         output_mask[3] && in.lam.defined()};
  const Tensor grad = grad_in.contiguous();
  Tensor gx = at::empty({0}, in.x.options()), gk0 = at::empty({0}, in.x.options());
  Tensor gs = at::empty({0}, in.x.options());
  Tensor glam = at::empty({0}, in.x.options().dtype(c10::toRealValueType(in.x.scalar_type())));
  if (in.x.numel() == 0 || in.k0.numel() == 0) {
    if (want.x) gx = at::zeros_like(in.x);
    if (want.k0) gk0 = at::zeros_like(in.k0);
    if (want.sens) gs = at::zeros_like(in.sens);
    if (want.lam) glam = at::zeros_like(in.lam);
    return {gx, gk0, gs, glam};
  }
  if (!(want.x || want.k0 || want.sens || want.lam)) return {gx, gk0, gs, glam};
  AT_DISPATCH_COMPLEX_TYPES(in.x.scalar_type(), "data_consistency_backward", [&] {
    using T = typename scalar_t::value_type;
    Tensor rx, rk0, rs, gw;
    std::tie(rx, rk0, rs, gw) = g.column_mask() ? dc_backward_columns<Backend, T>(in, grad, want)
                                                : dc_backward_2d<Backend, T>(in, grad, want);
    if (want.x) gx = rx;
    if (want.k0) gk0 = rk0;
    if (want.sens) gs = rs;
    if (want.lam) glam = (gw / (in.lam.reshape({}) + 1).square()).reshape(in.lam.sizes());
  });
  return {gx, gk0, gs, glam};
}

}  // namespace mfft
}  // namespace fastfn
