// Passes over every element of whole (H, W) images, used by both paths: the centring
// phases of fft2c/ifft2c, the mask of undersample, and the coil expand/combine of
// multi-coil data consistency (and its gradient with respect to the sensitivities).
// Rows are image rows n * H + h unless a pass says otherwise.
#pragma once

#include <cstdint>

#include "masked_fft/masked_fft.h"

namespace fastfn {
namespace mfft {

// out = in * factor * (r_H[h] r_W[w], or its conjugate): the pre and post passes of
// fft2c/ifft2c. May run in place.
template <typename T>
struct CentringPhase {
  const cx<T>* in;
  cx<T>* out;
  int64_t H, W;
  bool conjugate;
  cx<T> factor;
  PhaseRamp<T> rh, rw;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t h = row % H;
    cx<T> ph = rh(h);
    if (conjugate) ph = conj(ph);
    ph = ph * factor;
    for (int64_t w = w0; w < w1; ++w) {
      cx<T> r = rw(w);
      if (conjugate) r = conj(r);
      out[row * W + w] = in[row * W + w] * (ph * r);
    }
  }
};

// undersample's mask, in place on a spectrum X (unnormalised FFT along H and W, or along
// W only for a column mask): X <- m' X / len, with m' the (Bm, Hm, W) centred mask read
// at the centred index and scale = 1 / sqrt(len). Rows count from image n0 (X points at
// it); the mask's batch index is the image's.
template <typename T>
struct MaskSpectrum {
  cx<T>* X;
  const T* mask;
  int64_t Bm, Hm, H, W, n0;
  T scale;
  FASTFN_HD void operator()(int64_t row, int64_t q0, int64_t q1) const {
    const int64_t n = row / H, h = row % H;
    const int64_t bm = Bm == 1 ? 0 : n0 + n;
    const T* m = mask + (bm * Hm + (Hm == 1 ? 0 : centred_index(h, H))) * W;
    const T s = scale;
    cx<T>* xr = X + row * W;
    for (int64_t q = q0; q < q1; ++q) xr[q] = xr[q] * (m[centred_index(q, W)] * s * s);
  }
};

// Coil images: out[b, c] = S[b, c] * x[b]. Rows: (n - n0) * H + h for coil images
// n = b * C + c from n0 on (sens and out point at image n0; x at its start).
template <typename T>
struct CoilImages {
  const cx<T>* sens;
  const cx<T>* x;
  cx<T>* out;
  int64_t C, H, W, n0;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t b = (n0 + row / H) / C, h = row % H;
    const cx<T>* xr = x + (b * H + h) * W;
    for (int64_t w = w0; w < w1; ++w) out[row * W + w] = sens[row * W + w] * xr[w];
  }
};

// Coil combine: out[b] = scale * sum_c conj(S[b, c]) * u[b, c]. Rows: b * H + h. Each
// element sums its coils in a register, in coil order, and is stored once; scale is 1,
// or 1/W where the inverse FFT before it was left unnormalised (kFoldInverseScale).
template <typename T>
struct CoilCombine {
  const cx<T>* sens;
  const cx<T>* u;
  cx<T>* out;
  int64_t C, H, W;
  T scale;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t b = row / H, h = row % H;
    const int64_t coil_stride = H * W;
    const int64_t first = (b * C * H + h) * W;
    for (int64_t w = w0; w < w1; ++w) {
      cx<T> acc = conj(sens[first + w]) * u[first + w];
      for (int64_t c = 1; c < C; ++c) {
        const int64_t i = first + c * coil_stride + w;
        acc = acc + conj(sens[i]) * u[i];
      }
      out[row * W + w] = scale == T(1) ? acc : acc * scale;
    }
  }
};

// One coil image's share of the combine: acc += conj(S_n) * u_n. Rows: h.
template <typename T>
struct CoilCombineAdd {
  const cx<T>* sens;  // S_n (H, W)
  const cx<T>* u;     // u_n (H, W)
  cx<T>* acc;         // (H, W)
  int64_t W;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    for (int64_t w = w0; w < w1; ++w) acc[row * W + w] += conj(sens[row * W + w]) * u[row * W + w];
  }
};

// The single-coil soft-DC backward of the column path without the spectrum of x: with
// b = B * scale = F^-1 (1 - m') F g (B the inverse FFT after DcBackwardColumns' complement;
// scale 1, or 1/W where that FFT was left unnormalised),
//   grad_x = (1 - w) g + w b        = F^-1 (1 - w m') F g, written over B when wanted
//   terms  = Re(conj(g - b) x)      g - b = F^-1 m' F g, so the sum of terms is
//                                   Re <m' F g, F x>: the x part of grad_w (Parseval)
// Rows: (n - n0) * H + h for images n from n0 on (B and terms point at image n0; g and x
// at their start).
template <typename T>
struct SoftDcImage {
  const cx<T>* g;
  const cx<T>* x;
  cx<T>* B;
  T* terms;
  const T* lam;
  int64_t H, W, n0;
  T scale;
  bool write_grad_x;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const T w = dc_weight(lam);
    const int64_t src = (n0 * H + row) * W;
    for (int64_t p = w0; p < w1; ++p) {
      const int64_t i = row * W + p;
      const cx<T> gv = g[src + p], xv = x[src + p];
      const cx<T> b = B[i] * scale;
      const cx<T> d = gv - b;
      terms[i] = d.real() * xv.real() + d.imag() * xv.imag();
      if (write_grad_x) B[i] = gv * (T(1) - w) + b * w;
    }
  }
};

// grad_S[b, c] = (conj(g[b]) * u[b, c] + a[b, c] * conj(x[b])) * scale, with u the forward output
// and a the adjoint of DC applied to g, per coil. Rows: (n - n0) * H + h for coil images
// n = b * C + c from n0 on (u, a and out point at image n0; g and x at their start).
template <typename T>
struct SensGrad {
  const cx<T>* g;
  const cx<T>* u;
  const cx<T>* a;
  const cx<T>* x;
  cx<T>* out;
  int64_t C, H, W, n0;
  T scale;  // of u and a: 1, or 1/W where their inverse FFTs were left unnormalised
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t b = (n0 + row / H) / C, h = row % H;
    const int64_t xb = (b * H + h) * W;
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t i = row * W + w;
      const cx<T> v = conj(g[xb + w]) * u[i] + a[i] * conj(x[xb + w]);
      out[i] = scale == T(1) ? v : v * scale;
    }
  }
};

}  // namespace mfft
}  // namespace fastfn
