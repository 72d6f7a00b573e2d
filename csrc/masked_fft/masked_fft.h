// Masked-FFT operators: shapes, semantics, and the per-element math shared by the
// CPU loops (masked_fft_cpu.cpp) and the CUDA kernels (masked_fft_cuda.cu).
//
// Ops (schemas in csrc/fastfn.cpp; F_c = fastMRI's centred orthonormal 2D FFT):
//   fft2c(x), ifft2c(k)      x, k: (..., H, W) complex64/complex128, any H, W.
//   undersample(x, mask)      F_c^-1 (m * F_c x).  x: (..., H, W); mask real (dtype of
//                             x.real), (Bm, Hm, W) with Bm in {1, prod(...)}, Hm in {1, H}.
//   data_consistency(x, k0, mask, sens, lam)
//                             single-coil (sens None): x, k0 (..., H, W);
//                             multi-coil: x (B, H, W), k0 and sens (B, C, H, W);
//                             out = sum_c conj(S_c) F_c^-1((1 - w m) F_c(S_c x) + w m k0_c),
//                             w = lam / (1 + lam) (lam: 0-dim real tensor), w = 1 when lam None.
//   data_consistency_backward(grad, x, k0, mask, sens, lam, output_mask)
//                             (grad_x, grad_k0, grad_sens, grad_lam); unselected: size-0 tensors.
//
// How the kernels avoid shift copies (N: a length along H or W, s = floor(N / 2),
// r_N[n] = exp(-2 pi i s n / N), c_N = exp(2 pi i s^2 / N); r = (-1)^n for even N):
//   F_c   x = conj(c) conj(r) . fft(conj(r) . x)        (phase form, no index shift)
//   F_c^-1 y = c r . ifft(r . y)
//   F_c^-1 y = ifft(r[q] y[(q + s) mod N])              (permutation form)
//   F_c^-1 diag(m) F_c = ifft diag(m[(q + s) mod N]) fft   (shifts commute with circulants)
// So undersample and data consistency run plain FFTs with one pointwise "mid" pass
// that reads mask and k0 at the centred index (q + s) mod N and applies r. Column
// masks (Hm == 1) commute with the FFT along H, so those paths transform along W
// only ("hybrid" space: image rows, k-space columns); the measurement then enters as
// h0 = F_{c,H}^-1 k0, computed on the sampled columns only (gathered, ~1/R of k0).
// The FFTs are unnormalised; the 1/sqrt(N) factors are folded into the passes.
//
// Every pass is a functor called as f(row, j0, j1): it handles elements [j0, j1)
// of one row of the innermost dimension. The CPU runs whole rows in parallel (one
// index decode per row); the CUDA kernel calls it once per element.
#pragma once

#include <c10/util/complex.h>

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"

namespace fastfn {
namespace mfft {

template <typename T>
using cx = c10::complex<T>;

template <typename T>
FASTFN_HD cx<T> conj(cx<T> v) {
  return cx<T>(v.real(), -v.imag());
}

// The centred (fftshifted) index whose value sits at unshifted FFT bin q.
FASTFN_HD int64_t centred_index(int64_t q, int64_t n) {
  const int64_t j = q + n / 2;
  return j >= n ? j - n : j;
}

// r_N[q] = exp(-2 pi i floor(N/2) q / N): (-1)^q for even N.
template <typename T>
FASTFN_HD cx<T> centring_phase(int64_t q, int64_t n) {
  if ((n & 1) == 0) return cx<T>((q & 1) ? T(-1) : T(1), T(0));
  const int64_t p = ((n / 2) * q) % n;  // reduce before the float: exact for any size
  const double a = -2.0 * 3.14159265358979323846 * static_cast<double>(p) / static_cast<double>(n);
  return cx<T>(static_cast<T>(::cos(a)), static_cast<T>(::sin(a)));
}

// c_N = exp(2 pi i floor(N/2)^2 / N).
template <typename T>
FASTFN_HD cx<T> centring_constant(int64_t n) {
  const int64_t s = n / 2;
  const int64_t p = (s * s) % n;
  const double a = 2.0 * 3.14159265358979323846 * static_cast<double>(p) / static_cast<double>(n);
  return cx<T>(static_cast<T>(::cos(a)), static_cast<T>(::sin(a)));
}

// out = in * cst * (r_H[h] r_W[w] or its conjugate): the pre/post passes of fft2c/ifft2c.
// Rows: n * H + h. May run in place.
template <typename T>
struct PhaseScale {
  const cx<T>* in;
  cx<T>* out;
  int64_t H, W;
  bool conjugate;
  cx<T> cst;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t h = row % H;
    cx<T> ph = centring_phase<T>(h, H);
    if (conjugate) ph = conj(ph);
    ph = ph * cst;
    for (int64_t w = w0; w < w1; ++w) {
      cx<T> r = centring_phase<T>(w, W);
      if (conjugate) r = conj(r);
      out[row * W + w] = in[row * W + w] * (ph * r);
    }
  }
};

// Coil expand: out[b, c] = S[b, c] * x[b]. Rows: (b * C + c) * H + h.
template <typename T>
struct Expand {
  const cx<T>* sens;
  const cx<T>* x;
  cx<T>* out;
  int64_t C, H, W;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t b = row / (C * H), h = row % H;
    const cx<T>* xr = x + (b * H + h) * W;
    for (int64_t w = w0; w < w1; ++w) out[row * W + w] = sens[row * W + w] * xr[w];
  }
};

// Coil combine: out[b] = sum_c conj(S[b, c]) * u[b, c]. Rows: b * H + h.
template <typename T>
struct Combine {
  const cx<T>* sens;
  const cx<T>* u;
  cx<T>* out;
  int64_t C, H, W;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t b = row / H, h = row % H;
    cx<T>* o = out + row * W;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t base = ((b * C + c) * H + h) * W;
      for (int64_t w = w0; w < w1; ++w) {
        const cx<T> v = conj(sens[base + w]) * u[base + w];
        o[w] = c == 0 ? v : o[w] + v;
      }
    }
  }
};

// grad_S[b, c] = conj(g[b]) * u[b, c] + a[b, c] * conj(x[b]). Rows: (b * C + c) * H + h.
template <typename T>
struct GradSens {
  const cx<T>* g;
  const cx<T>* u;
  const cx<T>* a;
  const cx<T>* x;
  cx<T>* out;
  int64_t C, H, W;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t b = row / (C * H), h = row % H;
    const int64_t xb = (b * H + h) * W;
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t i = row * W + w;
      out[i] = conj(g[xb + w]) * u[i] + a[i] * conj(x[xb + w]);
    }
  }
};

// Gather the sampled columns of k0 for h0 = F_{c,H}^-1 k0, with the pre-phase r_H, into a
// (N, H, K) buffer (then transformed along H, its dim 1):
// out[n, h, q] = r_H[h] * k0[n, h, idx[bm, q]]. Rows: n * H + h; inner length K.
template <typename T>
struct GatherColumns {
  const cx<T>* k0;
  const int64_t* idx;  // (Bm, K)
  cx<T>* out;          // (N, H, K): the sampled values of a k-space row stay together
  int64_t C, H, W, K, Bm;
  // Row n * H + h reads k0's row (n, h) at the sampled columns (ascending, so the
  // reads run forward through one row) and writes K consecutive outputs: on the CPU
  // both sides stream, on CUDA neighbouring threads read one row and write together.
  FASTFN_HD void operator()(int64_t row, int64_t q0, int64_t q1) const {
    const int64_t n = row / H, h = row % H;
    const int64_t bm = Bm == 1 ? 0 : n / C;
    const cx<T>* src = k0 + row * W;
    const int64_t* cols = idx + bm * K;
    const cx<T> ph = centring_phase<T>(h, H);
    cx<T>* dst = out + row * K;
    for (int64_t q = q0; q < q1; ++q) dst[q] = src[cols[q]] * ph;
  }
};

// Inverse of the gather for grad_k0 on the hybrid path: out[n, kh, j] =
// cst * conj(r_H[kh]) * buf[n, kh, slot[bm, j]] at sampled columns, 0 elsewhere.
template <typename T>
struct ScatterColumns {
  const cx<T>* buf;     // (N, H, K) transformed along H, strides bs_n, bs_h, bs_k as ATen left them
  int64_t bs_n, bs_h, bs_k;
  const int64_t* slot;  // (Bm, W), -1 where unsampled
  cx<T>* out;           // (N, H, W)
  int64_t C, H, W, Bm;
  cx<T> cst;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t n = row / H, kh = row % H;
    const int64_t bm = Bm == 1 ? 0 : n / C;
    const cx<T> ph = cst * conj(centring_phase<T>(kh, H));
    for (int64_t j = w0; j < w1; ++j) {
      const int64_t sl = slot[bm * W + j];
      out[row * W + j] = sl >= 0 ? buf[n * bs_n + kh * bs_h + sl * bs_k] * ph : cx<T>(T(0), T(0));
    }
  }
};

// What the mid passes know about the sampling: geometry, mask, measurement, lam.
// Data rows are n * H + h with n = b * C + c; the mask is (Bm, Hm, W) in centred order.
template <typename T>
struct Frame {
  int64_t C, H, W;
  bool hybrid;         // column mask: data is fft along W only
  const T* mask;
  int64_t Bm, Hm;
  const cx<T>* k0;     // 2D path: k0 (N, H, W) centred; hybrid: ifft_H of the gather (N, H, K)
  const int64_t* slot; // hybrid: (Bm, W) gather slot of each centred column, -1 if unsampled
  int64_t K;
  int64_t ks_n, ks_h, ks_k;  // hybrid: strides of that buffer along n, h and the slot
  cx<T> kcst;          // hybrid: c_H / sqrt(H) (rest of F_{c,H}^-1); 2D: 1
  const T* lam;        // soft DC weight source (device memory); nullptr: hard DC
  T scale;             // 1 / sqrt(FFT length): 1/sqrt(H W) (2D) or 1/sqrt(W) (hybrid)

  FASTFN_HD T weight() const {
    if (lam == nullptr) return T(1);
    const T l = *lam;
    return l / (T(1) + l);
  }
  FASTFN_HD int64_t mask_batch(int64_t n) const { return Bm == 1 ? 0 : n / C; }
  FASTFN_HD const T* mask_row(int64_t bm, int64_t jh) const {
    return mask + (bm * Hm + (Hm == 1 ? 0 : jh)) * W;
  }
  // The measurement in the unshifted (fft) frame at row (n, h), bin q, centred column jw;
  // rh = the row factor from row_factor().
  FASTFN_HD cx<T> measured(int64_t n, int64_t h, int64_t jh, int64_t bm, int64_t q, int64_t jw,
                           cx<T> rh) const {
    const cx<T> v = hybrid ? k0[n * ks_n + h * ks_h + slot[bm * W + jw] * ks_k]
                           : k0[(n * H + jh) * W + jw];
    return v * rh * centring_phase<T>(q, W);
  }
  FASTFN_HD cx<T> row_factor(int64_t h) const {
    return hybrid ? kcst * centring_phase<T>(h, H) : centring_phase<T>(h, H);
  }
};

// Forward mid pass, in place on X = fft(S x) (unnormalised):
//   undersample: X <- m' X / len;  DC: X <- ((1 - w m') X s + w m' k0') s
// with m', k0' read at the centred index. Rows: n * H + h.
template <typename T>
struct ForwardMid {
  Frame<T> f;
  cx<T>* X;
  bool undersample;
  FASTFN_HD void operator()(int64_t row, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H;
    const int64_t n = row / H, h = row % H;
    const int64_t jh = f.hybrid ? h : centred_index(h, H);
    const int64_t bm = f.mask_batch(n);
    const T* m = f.mask_row(bm, jh);
    const T s = f.scale;
    cx<T>* xr = X + row * W;
    if (undersample) {
      for (int64_t q = q0; q < q1; ++q) xr[q] = xr[q] * (m[centred_index(q, W)] * s * s);
      return;
    }
    const T w = f.weight();
    const cx<T> rh = f.row_factor(h);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = centred_index(q, W);
      const T wm = w * m[jw];
      cx<T> z = xr[q] * ((T(1) - wm) * s);
      if (wm != T(0)) z = z + f.measured(n, h, jh, bm, q, jw, rh) * wm;
      xr[q] = z * s;
    }
  }
};

// Backward mid pass over G = fft(S g) (unnormalised), one read of every input:
//   a-input:  G <- (1 - w m') G s^2                         (then a = ifft(G))
//   u-input:  X <- ((1 - w m') X s + w m' k0') s            (forward mid, for grad_S)
//   grad_k0:  2D: gk0[jh, jw] = w m conj(r_H r_W) G s;  hybrid: the sampled column,
//             pre-phased for F_{c,H}, into the (N, H, K) buffer
//   grad_w:   contrib = m Re(conj(G s) (k0' - X s))         (summed by the caller)
template <typename T>
struct BackwardMid {
  Frame<T> f;
  cx<T>* G;
  cx<T>* X;        // fft(S x): needed for grad_w and grad_S, else nullptr
  cx<T>* gk0;      // nullptr unless grad_k0 is wanted
  T* contrib;      // nullptr unless grad_lam is wanted; (N, H, W)
  bool want_a, want_u;
  FASTFN_HD void operator()(int64_t row, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H;
    const int64_t n = row / H, h = row % H;
    const int64_t jh = f.hybrid ? h : centred_index(h, H);
    const int64_t bm = f.mask_batch(n);
    const T* m = f.mask_row(bm, jh);
    const T s = f.scale;
    const T w = f.weight();
    const bool need_k = contrib != nullptr || want_u;
    const cx<T> rh = need_k ? f.row_factor(h) : cx<T>(T(1), T(0));
    const cx<T> rhc = conj(centring_phase<T>(h, H));
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = centred_index(q, W);
      const int64_t i = row * W + q;
      const T mq = m[jw];
      const T wm = w * mq;
      const cx<T> go = G[i] * s;
      cx<T> kv(T(0), T(0));
      if (need_k && mq != T(0)) kv = f.measured(n, h, jh, bm, q, jw, rh);
      if (contrib != nullptr) {
        const cx<T> d = kv - X[i] * s;
        contrib[i] = mq * (go.real() * d.real() + go.imag() * d.imag());
      }
      if (want_u) X[i] = (X[i] * ((T(1) - wm) * s) + kv * wm) * s;
      if (gk0 != nullptr) {
        const cx<T> v = go * conj(centring_phase<T>(q, W)) * rhc * wm;
        if (!f.hybrid) {
          gk0[(n * H + jh) * W + jw] = v;
        } else if (mq != T(0)) {
          gk0[(n * H + h) * f.K + f.slot[bm * W + jw]] = v;
        }
      }
      if (want_a) G[i] = go * ((T(1) - wm) * s);
    }
  }
};

}  // namespace mfft
}  // namespace fastfn
