// Masked-FFT operators: shapes, semantics, and the per-element math shared by every
// pass (masked_fft_image_passes.h, masked_fft_2d.h, masked_fft_columns.h), which the
// CPU loops (masked_fft_cpu.cpp) and the CUDA kernels (masked_fft_cuda.cu) both run.
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
// Arguments are checked in masked_fft_check.h (the Python fake kernels in
// fastfn/ops/masked_fft.py repeat those checks for meta and compile tracing).
//
// How the kernels avoid shift copies (N: a length along H or W, s = floor(N / 2),
// r_N[n] = exp(-2 pi i s n / N), c_N = exp(2 pi i s^2 / N); r = (-1)^n for even N):
//   F_c   x = conj(c) conj(r) . fft(conj(r) . x)        (phase form, no index shift)
//   F_c^-1 y = c r . ifft(r . y)
//   F_c^-1 y = ifft(r[q] y[(q + s) mod N])              (permutation form)
//   F_c^-1 diag(m) F_c = ifft diag(m[(q + s) mod N]) fft   (shifts commute with circulants)
// So undersample and data consistency run plain FFTs with one pointwise pass over the
// spectrum that reads mask and k0 at the centred index (q + s) mod N and applies r.
//
// Two paths. The 2D path (a general (Bm, H, W) mask) transforms along H and W, its FFTs
// unnormalised, the 1/sqrt(H W) factors folded into the passes (masked_fft_2d.h). The
// column path (a column mask, Hm == 1) uses that such a mask commutes with the FFT along
// H: it transforms along W only ("hybrid" space: image rows, k-space columns), and the
// measurement enters as h0 = F_{c,H}^-1 k0, computed on the K sampled columns only
// (gathered, ~1/R of k0); its DC passes visit only those columns, and its inverse FFT
// along W divides by W itself (masked_fft_columns.h).
//
// Every pass is a functor called as f(row, j0, j1): it handles elements [j0, j1) of one
// "row" (an image row, or for the column passes a tile of image rows; the inner index
// then runs over gather slots or columns). The CPU runs whole rows in parallel (one
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

// The plain FFT bin whose centred (fftshifted) index is j: inverse of centred_index.
FASTFN_HD int64_t plain_index(int64_t j, int64_t n) {
  const int64_t s = n / 2;
  return j >= s ? j - s : j + n - s;
}

// r_N[q] = exp(-2 pi i floor(N/2) q / N): (-1)^q for even N.
template <typename T>
FASTFN_HD cx<T> centring_phase(int64_t q, int64_t n) {
  if ((n & 1) == 0) return cx<T>((q & 1) ? T(-1) : T(1), T(0));
  const int64_t p = ((n / 2) * q) % n;  // reduce before the float: exact for any size
  const double a = -2.0 * 3.14159265358979323846 * static_cast<double>(p) / static_cast<double>(n);
  return cx<T>(static_cast<T>(::cos(a)), static_cast<T>(::sin(a)));
}

// r_n[q] for the passes: a sign for even n, read from a table built once per call for odd
// n (phase_tables, masked_fft_forward.h), so that no pass evaluates a double-precision
// sin/cos per element.
template <typename T>
struct PhaseRamp {
  const cx<T>* table;  // (n,) r_n for odd n; nullptr for even n
  int64_t n;
  FASTFN_HD cx<T> operator()(int64_t q) const {
    if ((n & 1) == 0) return cx<T>((q & 1) ? T(-1) : T(1), T(0));
    return table[q];
  }
};

// Fills a PhaseRamp's table: out[q] = r_n[q]. One row; inner index q in [0, n).
template <typename T>
struct FillPhaseRamp {
  cx<T>* out;
  int64_t n;
  FASTFN_HD void operator()(int64_t, int64_t q0, int64_t q1) const {
    for (int64_t q = q0; q < q1; ++q) out[q] = centring_phase<T>(q, n);
  }
};

// c_N = exp(2 pi i floor(N/2)^2 / N).
template <typename T>
FASTFN_HD cx<T> centring_constant(int64_t n) {
  const int64_t s = n / 2;
  const int64_t p = (s * s) % n;
  const double a = 2.0 * 3.14159265358979323846 * static_cast<double>(p) / static_cast<double>(n);
  return cx<T>(static_cast<T>(::cos(a)), static_cast<T>(::sin(a)));
}

// The DC weight w = lam / (1 + lam), read from (device) memory; 1 (hard DC) for nullptr.
template <typename T>
FASTFN_HD T dc_weight(const T* lam) {
  if (lam == nullptr) return T(1);
  const T l = *lam;
  return l / (T(1) + l);
}

// One element's share of grad_w: m Re(conj(G s) (k0' - X s)), given go = G s, the
// measurement kv and xs = X s (both backward passes, 2D and column).
template <typename T>
FASTFN_HD T weight_grad_term(T m, cx<T> go, cx<T> kv, cx<T> xs) {
  const cx<T> d = kv - xs;
  return m * (go.real() * d.real() + go.imag() * d.imag());
}

}  // namespace mfft
}  // namespace fastfn
