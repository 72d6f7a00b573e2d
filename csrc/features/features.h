// Feature insertion and the fused projected-gradient step of the FNAF attack.
//
// A batch holds N images with R candidate features each. A feature is a compact
// list of P pixels: flat indices into the H x W image (row * W + col, int64, -1 =
// padding, so features of different sizes share one tensor) and one intensity
// per pixel. Generators emit each pixel of a feature at most once; a repeated
// index is not an error (its intensities add up).
//
// insert_features(images (N,H,W) f32/f64, index (N,R,P) i64, values (N,R,P), ring)
//   -> perturbed (N,R,H,W): images[n] + sum_p values[n,r,p] at index[n,r,p]
//      region    (N,R,H,W): 1 on the support dilated by `ring` 4-neighbour steps
//                           (the L1 ball |dy| + |dx| <= ring), else 0; the loss
//                           region T of docs/METHOD.md section 5.
//   Beyond the base copy of the image into every candidate slot, only the
//   feature pixels and their ring are touched.
//
// feature_step(perturbed (N,R,H,W)!, values (N,R,P)!, index, grad (N,R,H,W),
//              lo (N,R), hi (N,R), step (N,R), normalize) -> ()
//   One projected gradient-ascent step on the intensities, in place:
//     g_p   = grad[n,r,index_p]                      (dL/dvalues, gathered)
//     d_p   = sign(g_p)                              (normalize = false)
//           = g_p * sqrt(P_valid) / ||g||_2          (normalize = true; 0 if g = 0)
//     v_p'  = clamp(v_p + step[n,r] * d_p, lo[n,r], hi[n,r])
//     perturbed[n,r,index_p] += v_p' - v_p ;  values[n,r,p] = v_p'
//   so `perturbed` stays equal to insert_features(images, index, values).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"

namespace fastfn {
namespace features {

// Sign of g as the step direction: 0 where the gradient vanishes (a pixel the
// loss does not see stays put).
template <typename T>
FASTFN_HD T sign_of(T g) {
  return static_cast<T>((g > T(0)) - (g < T(0)));
}

template <typename T>
FASTFN_HD T clamp_to(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// New intensity after one projected step along direction d.
template <typename T>
FASTFN_HD T projected_step(T v, T d, T step, T lo, T hi) {
  return clamp_to(v + step * d, lo, hi);
}

// Scale that turns a gradient into a step direction of unit RMS over the
// feature's n_valid pixels: sqrt(n_valid) / ||g||_2, 0 for a zero gradient.
template <typename T>
FASTFN_HD T normalized_scale(T sumsq, int64_t n_valid) {
  return sumsq > T(0) ? static_cast<T>(sqrt(static_cast<double>(n_valid) / static_cast<double>(sumsq))) : T(0);
}

// Half-width of the ring's row dy: pixels (dy, dx) with |dx| <= ring - |dy|.
FASTFN_HD int64_t ring_halfwidth(int64_t ring, int64_t dy) {
  return ring - (dy < 0 ? -dy : dy);
}

// Marks pixel i of an H x W loss-region map and its 4-neighbour ring of radius
// `ring` (a diamond, clipped at the image border) with 1.
template <typename T>
FASTFN_HD void mark_ring(T* region, int64_t i, int64_t H, int64_t W, int64_t ring) {
  const int64_t y = i / W, x = i % W;
  for (int64_t dy = -ring; dy <= ring; ++dy) {
    const int64_t yy = y + dy;
    if (yy < 0 || yy >= H) continue;
    const int64_t hw = ring_halfwidth(ring, dy);
    const int64_t x0 = x - hw < 0 ? 0 : x - hw;
    const int64_t x1 = x + hw >= W ? W - 1 : x + hw;
    for (int64_t xx = x0; xx <= x1; ++xx) region[yy * W + xx] = T(1);
  }
}

}  // namespace features
}  // namespace fastfn
