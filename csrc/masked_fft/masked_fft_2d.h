// The 2D path of data consistency (a general (Bm, H, W) mask): passes over every element
// of the spectra X = fft(S x) and G = fft(S g), unnormalised 2D FFTs of the whole batch,
// with the 1/sqrt(H W) factors folded in. Rows: n * H + h for coil images n = b * C + c.
#pragma once

#include <cstdint>

#include "masked_fft/masked_fft.h"

namespace fastfn {
namespace mfft {

// What the 2D passes know about the sampling: geometry, mask, measurement, lam.
template <typename T>
struct Frame2d {
  int64_t C, H, W;
  const T* mask;     // (Bm, H, W), centred
  int64_t Bm;
  const cx<T>* k0;   // (N, H, W), centred
  const T* lam;      // soft DC weight source (device memory); nullptr: hard DC
  T scale;           // 1 / sqrt(H W)
  PhaseRamp<T> rh, rw;

  // The mask row at centred row jh of coil image n.
  FASTFN_HD const T* mask_row(int64_t n, int64_t jh) const {
    return mask + ((Bm == 1 ? 0 : n / C) * H + jh) * W;
  }
  // The measurement in the unshifted (fft) frame at row (n, centred jh), bin q, centred
  // column jw.
  FASTFN_HD cx<T> measured(int64_t n, int64_t h, int64_t jh, int64_t q, int64_t jw) const {
    return k0[(n * H + jh) * W + jw] * (rh(h) * rw(q));
  }
};

// The DC blend of the spectrum, in place: X <- ((1 - w m') X s + w m' k0') s, with m'
// and k0' read at the centred index (its inverse FFT is the output per coil).
template <typename T>
struct DcBlend2d {
  Frame2d<T> f;
  cx<T>* X;
  FASTFN_HD void operator()(int64_t row, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H;
    const int64_t n = row / H, h = row % H;
    const int64_t jh = centred_index(h, H);
    const T* m = f.mask_row(n, jh);
    const T s = f.scale;
    cx<T>* xr = X + row * W;
    const T w = dc_weight(f.lam);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = centred_index(q, W);
      const T wm = w * m[jw];
      cx<T> z = xr[q] * ((T(1) - wm) * s);
      if (wm != T(0)) z = z + f.measured(n, h, jh, q, jw) * wm;
      xr[q] = z * s;
    }
  }
};

// Every gradient of the 2D path in one read of G (and X), each output optional:
//   adjoint_in_place:  G <- (1 - w m') G s^2     (its inverse FFT: the adjoint of DC applied
//                                                 to g, per coil, a)
//   output_in_place:   X <- ((1 - w m') X s + w m' k0') s   (DcBlend2d; its inverse FFT: the
//                                                 forward output per coil, u, for grad_S)
//   grad_k0:           grad_k0[jh, jw] = w m conj(r_H r_W) G s
//   weight_terms:      m Re(conj(G s) (k0' - X s)), summed by the caller into grad_w
template <typename T>
struct DcBackward2d {
  Frame2d<T> f;
  cx<T>* G;             // fft(S g)
  cx<T>* X;             // fft(S x): needed for weight_terms and output_in_place, else nullptr
  cx<T>* grad_k0;       // (N, H, W), or nullptr
  T* weight_terms;      // (N, H, W), or nullptr
  bool adjoint_in_place, output_in_place;
  FASTFN_HD void operator()(int64_t row, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H;
    const int64_t n = row / H, h = row % H;
    const int64_t jh = centred_index(h, H);
    const T* m = f.mask_row(n, jh);
    const T s = f.scale;
    const T w = dc_weight(f.lam);
    const bool need_measurement = weight_terms != nullptr || output_in_place;
    const cx<T> rhc = conj(f.rh(h));
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = centred_index(q, W);
      const int64_t i = row * W + q;
      const T mq = m[jw];
      const T wm = w * mq;
      const cx<T> go = G[i] * s;
      cx<T> kv(T(0), T(0));
      if (need_measurement && mq != T(0)) kv = f.measured(n, h, jh, q, jw);
      if (weight_terms != nullptr) weight_terms[i] = weight_grad_term(mq, go, kv, X[i] * s);
      if (output_in_place) X[i] = (X[i] * ((T(1) - wm) * s) + kv * wm) * s;
      if (grad_k0 != nullptr) grad_k0[(n * H + jh) * W + jw] = go * conj(f.rw(q)) * rhc * wm;
      if (adjoint_in_place) G[i] = go * ((T(1) - wm) * s);
    }
  }
};

}  // namespace mfft
}  // namespace fastfn
