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
// h0 = F_{c,H}^-1 k0, computed on the sampled columns only (gathered, ~1/R of k0),
// and the DC passes there visit only the K sampled columns (ColumnBlend,
// ColumnBackward): their inverse FFT along W divides by W itself. Otherwise the FFTs
// are unnormalised and the 1/sqrt(N) factors are folded into the passes.
//
// Every pass is a functor called as f(row, j0, j1): it handles elements [j0, j1)
// of one "row" (an image row, or for the column passes a tile of kRowBlock image
// rows; the inner index then runs over gather slots or columns). The CPU runs whole
// rows in parallel (one index decode per row); the CUDA kernel calls it once per
// element. Functors whose pointers start at image n0 (the CPU's image chunks) say so.
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

// Coil expand: out[b, c] = S[b, c] * x[b]. Rows: (n - n0) * H + h for coil images
// n = b * C + c from n0 on (sens and out point at image n0; x at its start).
template <typename T>
struct Expand {
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

// Partial coil combine of one coil image: acc += conj(S_n) * u_n. Rows: h.
template <typename T>
struct CombineAdd {
  const cx<T>* sens;  // S_n (H, W)
  const cx<T>* u;     // u_n (H, W)
  cx<T>* acc;         // (H, W)
  int64_t W;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    for (int64_t w = w0; w < w1; ++w) acc[row * W + w] += conj(sens[row * W + w]) * u[row * W + w];
  }
};

// grad_S[b, c] = conj(g[b]) * u[b, c] + a[b, c] * conj(x[b]).
// Rows: (n - n0) * H + h for coil images n = b * C + c from n0 on (u, a and out point at
// image n0; g and x at their start).
template <typename T>
struct GradSens {
  const cx<T>* g;
  const cx<T>* u;
  const cx<T>* a;
  const cx<T>* x;
  cx<T>* out;
  int64_t C, H, W, n0;
  FASTFN_HD void operator()(int64_t row, int64_t w0, int64_t w1) const {
    const int64_t b = (n0 + row / H) / C, h = row % H;
    const int64_t xb = (b * H + h) * W;
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t i = row * W + w;
      out[i] = conj(g[xb + w]) * u[i] + a[i] * conj(x[xb + w]);
    }
  }
};

// The plain FFT bin whose centred (fftshifted) index is j: inverse of centred_index.
FASTFN_HD int64_t plain_index(int64_t j, int64_t n) {
  const int64_t s = n / 2;
  return j >= s ? j - s : j + n - s;
}

// The hybrid path's column passes work on tiles of kRowBlock image rows: a "row" of
// theirs is (n, block), rows n * blocks(H) + hb, covering h in [hb * kRowBlock, ...).
// For each sampled column they visit the block's rows together, so the (N, K, H)
// measurement buffer is read or written a whole cache line at a time instead of one
// element per line (a row-at-a-time pass there touches K scattered lines per row).
constexpr int64_t kRowBlock = 8;

FASTFN_HD int64_t row_blocks(int64_t H) { return (H + kRowBlock - 1) / kRowBlock; }

// Rows [h0, h1) of image n in tile `tile` (of n * row_blocks(H) + hb).
struct RowTile {
  int64_t n, h0, h1;
  FASTFN_HD RowTile(int64_t tile, int64_t H) {
    const int64_t nb = row_blocks(H);
    n = tile / nb;
    h0 = (tile % nb) * kRowBlock;
    h1 = h0 + kRowBlock < H ? h0 + kRowBlock : H;
  }
};

// Gather the sampled columns of k0 for h0 = F_{c,H}^-1 k0, with the pre-phase r_H, into a
// contiguous (N, K, H) buffer (then transformed along H, its last dim):
// out[n, q, h] = r_H[h] * k0[n, h, idx[bm, q]]. Tiles of RowTile counted from image n0
// (k0 and out point at image n0); inner: slots [0, K).
template <typename T>
struct GatherColumns {
  const cx<T>* k0;
  const int64_t* idx;  // (Bm, K)
  cx<T>* out;          // (N, K, H)
  int64_t C, H, W, K, Bm, n0;
  FASTFN_HD void operator()(int64_t tile, int64_t q0, int64_t q1) const {
    const RowTile t(tile, H);
    const int64_t bm = Bm == 1 ? 0 : (n0 + t.n) / C;
    const int64_t* cols = idx + bm * K;
    cx<T> ph[kRowBlock];
    for (int64_t h = t.h0; h < t.h1; ++h) ph[h - t.h0] = centring_phase<T>(h, H);
    const cx<T>* src = k0 + (t.n * H + t.h0) * W;
    const int64_t rows = t.h1 - t.h0;
    // k0 is read once, from memory, at scattered columns: the CPU asks for the lines of
    // the next tile (the next rows, of this image or the next) while it gathers this
    // one; without it the loads here were latency-bound
    const int64_t ahead = rows * W;
    for (int64_t q = q0; q < q1; ++q) {
      cx<T>* dst = out + (t.n * K + q) * H + t.h0;
      const int64_t col = cols[q];
      for (int64_t i = 0; i < rows; ++i) {
        prefetch_for_read(src + ahead + i * W + col);
        dst[i] = src[i * W + col] * ph[i];
      }
    }
  }
};

// Inverse of the gather for grad_k0 on the hybrid path: out[n, kh, j] =
// cst * conj(r_H[kh]) * buf[n, slot[bm, j], kh] at sampled columns, 0 elsewhere.
// Tiles of RowTile counted from image n0 (buf and out point at it); inner: columns [0, W).
template <typename T>
struct ScatterColumns {
  const cx<T>* buf;     // (N, K, H) transformed along H
  const int64_t* slot;  // (Bm, W), -1 where unsampled
  cx<T>* out;           // (N, H, W)
  int64_t C, H, W, K, Bm, n0;
  cx<T> cst;
  FASTFN_HD void operator()(int64_t tile, int64_t w0, int64_t w1) const {
    const RowTile t(tile, H);
    const int64_t bm = Bm == 1 ? 0 : (n0 + t.n) / C;
    cx<T> ph[kRowBlock];
    for (int64_t kh = t.h0; kh < t.h1; ++kh) ph[kh - t.h0] = cst * conj(centring_phase<T>(kh, H));
    cx<T>* dst = out + (t.n * H + t.h0) * W;
    const int64_t rows = t.h1 - t.h0;
    for (int64_t j = w0; j < w1; ++j) {
      const int64_t sl = slot[bm * W + j];
      const cx<T>* src = buf + (t.n * K + (sl >= 0 ? sl : 0)) * H + t.h0;
      for (int64_t i = 0; i < rows; ++i) dst[i * W + j] = sl >= 0 ? src[i] * ph[i] : cx<T>(T(0), T(0));
    }
  }
};

// What the passes know about the sampling: geometry, mask, measurement, lam.
// Data rows are n * H + h with n = b * C + c; the mask is (Bm, Hm, W) in centred order.
template <typename T>
struct Frame {
  int64_t C, H, W;
  bool hybrid;         // column mask: data is fft along W only
  const T* mask;
  int64_t Bm, Hm;
  int64_t n0;          // image index of row 0 (the CPU's image chunks; else 0)
  const cx<T>* k0;     // 2D path: k0 (N, H, W) centred; hybrid: ifft_H of the gather (N, K, H)
  const int64_t* idx;  // hybrid: (Bm, K) centred sampled columns, ascending, then padding
  int64_t K;           // hybrid: gather slots per image
  cx<T> kcst;          // hybrid: c_H / sqrt(H) (rest of F_{c,H}^-1); 2D: 1
  const T* lam;        // soft DC weight source (device memory); nullptr: hard DC
  T scale;             // 1 / sqrt(FFT length): 1/sqrt(H W) (2D) or 1/sqrt(W) (hybrid)

  FASTFN_HD T weight() const {
    if (lam == nullptr) return T(1);
    const T l = *lam;
    return l / (T(1) + l);
  }
  FASTFN_HD int64_t mask_batch(int64_t n) const { return Bm == 1 ? 0 : (n0 + n) / C; }
  FASTFN_HD const T* mask_row(int64_t bm, int64_t jh) const {
    return mask + (bm * Hm + (Hm == 1 ? 0 : jh)) * W;
  }
  // 2D path: the measurement in the unshifted (fft) frame at row (n, centred jh), bin q,
  // centred column jw.
  FASTFN_HD cx<T> measured(int64_t n, int64_t h, int64_t jh, int64_t q, int64_t jw) const {
    return k0[(n * H + jh) * W + jw] * (centring_phase<T>(h, H) * centring_phase<T>(q, W));
  }
  // Hybrid path: the measurement in the (image row h, unshifted bin p) frame at gather
  // slot sl; rh = hybrid_row_factor(h).
  FASTFN_HD cx<T> measured_column(int64_t n, int64_t h, int64_t sl, int64_t p, cx<T> rh) const {
    return k0[(n * K + sl) * H + h] * (rh * centring_phase<T>(p, W));
  }
  FASTFN_HD cx<T> hybrid_row_factor(int64_t h) const { return kcst * centring_phase<T>(h, H); }
};

// Forward mid pass, in place on X = fft(S x) (unnormalised), over every element:
//   undersample (either path): X <- m' X / len
//   DC (2D path):              X <- ((1 - w m') X s + w m' k0') s
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
    const T* m = f.mask_row(f.mask_batch(n), jh);
    const T s = f.scale;
    cx<T>* xr = X + row * W;
    if (undersample) {
      for (int64_t q = q0; q < q1; ++q) xr[q] = xr[q] * (m[centred_index(q, W)] * s * s);
      return;
    }
    const T w = f.weight();
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = centred_index(q, W);
      const T wm = w * m[jw];
      cx<T> z = xr[q] * ((T(1) - wm) * s);
      if (wm != T(0)) z = z + f.measured(n, h, jh, q, jw) * wm;
      xr[q] = z * s;
    }
  }
};

// Forward blend of the hybrid path, in place on X = fft_W(S x) (unnormalised), touching
// only the gathered columns (K of W): X <- (1 - w m') X + w m' h0' sqrt(W). The inverse
// FFT that follows divides by W, so unsampled bins need no pass at all.
// Tiles of RowTile counted from image f.n0 (X and f.k0 point at it); inner: slots [0, K).
template <typename T>
struct ColumnBlend {
  Frame<T> f;
  cx<T>* X;
  FASTFN_HD void operator()(int64_t tile, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H;
    const RowTile t(tile, H);
    const int64_t bm = f.mask_batch(t.n);
    const T* m = f.mask_row(bm, 0);
    const int64_t* cols = f.idx + bm * f.K;
    const T w = f.weight();
    const T root = T(1) / f.scale;
    cx<T> rh[kRowBlock];  // the tile's row factors, hoisted out of the slot loop
    for (int64_t h = t.h0; h < t.h1; ++h) rh[h - t.h0] = f.hybrid_row_factor(h);
    cx<T>* xt = X + (t.n * H + t.h0) * W;
    const cx<T>* mt = f.k0 + t.n * f.K * H + t.h0;
    const int64_t rows = t.h1 - t.h0;
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = cols[q];
      const T wm = w * m[jw];
      if (wm == T(0)) continue;  // padding slot (or lam = 0): X stays
      const int64_t p = plain_index(jw, W);
      const cx<T> fq = centring_phase<T>(p, W) * (wm * root);
      const cx<T>* mq = mt + q * H;
      if (wm == T(1)) {  // a sampled column of hard DC: the measurement replaces X
        for (int64_t i = 0; i < rows; ++i) xt[i * W + p] = mq[i] * (rh[i] * fq);
      } else {
        for (int64_t i = 0; i < rows; ++i) xt[i * W + p] = xt[i * W + p] * (T(1) - wm) + mq[i] * (rh[i] * fq);
      }
    }
  }
};

// One element's share of grad_w: m Re(conj(G s) (k0' - X s)), given go = G s, the
// measurement kv and xs = X s (both backward passes, 2D and hybrid).
template <typename T>
FASTFN_HD T weight_grad_term(T m, cx<T> go, cx<T> kv, cx<T> xs) {
  const cx<T> d = kv - xs;
  return m * (go.real() * d.real() + go.imag() * d.imag());
}

// Backward mid pass of the 2D path over G = fft(S g) (unnormalised), one read of every input:
//   a-input:  G <- (1 - w m') G s^2                         (then a = ifft(G))
//   u-input:  X <- ((1 - w m') X s + w m' k0') s            (forward mid, for grad_S)
//   grad_k0:  gk0[jh, jw] = w m conj(r_H r_W) G s
//   grad_w:   contrib = m Re(conj(G s) (k0' - X s))         (summed by the caller)
template <typename T>
struct BackwardMid {
  Frame<T> f;
  cx<T>* G;
  cx<T>* X;        // fft(S x): needed for grad_w and grad_S, else nullptr
  cx<T>* gk0;      // nullptr unless grad_k0 is wanted; (N, H, W)
  T* contrib;      // nullptr unless grad_lam is wanted; (N, H, W)
  bool want_a, want_u;
  FASTFN_HD void operator()(int64_t row, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H;
    const int64_t n = row / H, h = row % H;
    const int64_t jh = centred_index(h, H);
    const T* m = f.mask_row(f.mask_batch(n), jh);
    const T s = f.scale;
    const T w = f.weight();
    const bool need_k = contrib != nullptr || want_u;
    const cx<T> rhc = conj(centring_phase<T>(h, H));
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = centred_index(q, W);
      const int64_t i = row * W + q;
      const T mq = m[jw];
      const T wm = w * mq;
      const cx<T> go = G[i] * s;
      cx<T> kv(T(0), T(0));
      if (need_k && mq != T(0)) kv = f.measured(n, h, jh, q, jw);
      if (contrib != nullptr) contrib[i] = weight_grad_term(mq, go, kv, X[i] * s);
      if (want_u) X[i] = (X[i] * ((T(1) - wm) * s) + kv * wm) * s;
      if (gk0 != nullptr) gk0[(n * H + jh) * W + jw] = go * conj(centring_phase<T>(q, W)) * rhc * wm;
      if (want_a) G[i] = go * ((T(1) - wm) * s);
    }
  }
};

// Backward pass of the hybrid path over G = fft_W(S g) (unnormalised), touching only the
// gathered columns; the inverse FFTs that follow divide by W:
//   a-input:  G <- (1 - w m') G                              (then a = ifft(G) / W)
//   u-input:  X <- (1 - w m') X + w m' h0' sqrt(W)           (then u = ifft(X) / W)
//   grad_k0:  gbuf[n, q, h] = w m conj(r_W r_H) G s           (then fft_H, scattered)
//   grad_w:   contrib[n, h, q] = m Re(conj(G s) (h0' - X s))   (summed by the caller)
// Every gbuf and contrib element is written (0 in padding slots).
// Tiles of RowTile counted from image f.n0 (G, X, gbuf, contrib, f.k0 point at it);
// inner: gather slots [0, K).
template <typename T>
struct ColumnBackward {
  Frame<T> f;
  cx<T>* G;
  cx<T>* X;        // fft_W(S x): needed for grad_w and grad_S, else nullptr
  cx<T>* gk0;      // nullptr unless grad_k0 is wanted; (N, K, H)
  T* contrib;      // nullptr unless grad_lam is wanted; (N, H, K)
  bool want_a, want_u;
  FASTFN_HD void operator()(int64_t tile, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H, K = f.K;
    const RowTile t(tile, H);
    const int64_t n = t.n;
    const int64_t bm = f.mask_batch(n);
    const T* m = f.mask_row(bm, 0);
    const int64_t* cols = f.idx + bm * K;
    const T s = f.scale;
    const T w = f.weight();
    const bool need_k = contrib != nullptr || want_u;
    cx<T> rh[kRowBlock], rhc[kRowBlock];  // the tile's row factors, hoisted out of the slot loop
    for (int64_t h = t.h0; h < t.h1; ++h) {
      rh[h - t.h0] = f.hybrid_row_factor(h);
      rhc[h - t.h0] = conj(centring_phase<T>(h, H));
    }
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = cols[q];
      const T mq = m[jw];
      const T wm = w * mq;
      const int64_t p = plain_index(jw, W);
      const cx<T> rw = conj(centring_phase<T>(p, W));
      for (int64_t h = t.h0; h < t.h1; ++h) {
        const int64_t i = (n * H + h) * W + p;
        const cx<T> go = G[i] * s;
        cx<T> kv(T(0), T(0));
        if (need_k && mq != T(0)) kv = f.measured_column(n, h, q, p, rh[h - t.h0]);
        if (contrib != nullptr) contrib[(n * H + h) * K + q] = weight_grad_term(mq, go, kv, X[i] * s);
        if (gk0 != nullptr) gk0[(n * K + q) * H + h] = go * rw * rhc[h - t.h0] * wm;
        if (wm == T(0)) continue;
        if (want_u) X[i] = X[i] * (T(1) - wm) + kv * (wm / s);
        if (want_a) G[i] = G[i] * (T(1) - wm);
      }
    }
  }
};

}  // namespace mfft
}  // namespace fastfn
