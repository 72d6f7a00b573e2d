// How the host code of the masked-FFT ops runs on a backend: ATen's FFT calls and the
// image chunks of the column path. The host code is written once for every device; each
// translation unit supplies a Backend and registers the ops for its dispatch key:
//
//   Backend::launch(f, rows, inner)  runs pass f over rows x inner elements on the device
//   Backend::DeviceGuard             made from the inputs' device once they are checked
//   Backend::kSplitSmall2d           small 2D FFTs run as two 1D ones (W, then H)
//   Backend::kColumnTileRows         image rows per call of the column passes (masked_fft_columns.h)
//   Backend::kFoldInverseScale       the column path's inverse FFTs along W unnormalised, their
//                                    1/W applied by a pass of ours (needs !kImageChunks)
//   Backend::kGatherRowsFastest      the gather of k0's sampled columns with the image row as the
//                                    inner index (GatherColumnRows), not row tiles x slots
//   Backend::reuse_allowed()         whether a call may reuse what an earlier call prepared
//                                    (the column measurement); false while a CUDA graph is captured
//   Backend::kImageChunks            false: every pass covers the whole batch in one call.
//                                    true: the column path runs in image chunks, and
//   Backend::image_chunk(images, image_bytes)  gives the images per chunk,
//   Backend::for_each_range(count, fn)         runs fn(c0, c1) over [0, count) in parallel,
//   Backend::store_chunk(dst, src)             copies a chunk's result into the output.
//
// The CPU backend (masked_fft_cpu.cpp) chunks; the CUDA backend's schedule
// (masked_fft_cuda_schedule.h) is the whole batch per pass.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fastfn {
namespace mfft {

// ATen's fft normalisation enum values (fft_norm_mode): "none" (the passes apply the
// 1/sqrt(N) factors) and "by_n" (the column path's inverse along W, so that the passes
// need not touch the unsampled columns).
constexpr int64_t kFftUnnormalised = 0;
constexpr int64_t kFftByN = 2;

// ATen's transform as it returns it: along an inner dim possibly with permuted strides
// (fft_along makes the result contiguous).
inline at::Tensor fft_strided(const at::Tensor& t, std::vector<int64_t> dims, bool forward) {
  return at::_fft_c2c(t, dims, kFftUnnormalised, forward);
}

// Unnormalised FFT along dims, contiguous. Backend::kSplitSmall2d: MKL's 2D transform has
// a fixed cost of milliseconds per call, so on CPU small 2D transforms run as two 1D ones.
template <class Backend>
at::Tensor fft_along(const at::Tensor& t, std::vector<int64_t> dims, bool forward) {
  if (Backend::kSplitSmall2d && dims.size() == 2 && t.size(dims[0]) * t.size(dims[1]) <= 32768) {
    return fft_strided(fft_strided(t, {dims[1]}, forward), {dims[0]}, forward).contiguous();
  }
  return fft_strided(t, dims, forward).contiguous();
}

// Images per chunk of the column path: on a chunking backend a cache-sized chunk, so that
// every pass of a chunk meets its data in cache instead of streaming the batch through
// memory once per pass; else the whole batch.
template <class Backend>
int64_t image_chunk(int64_t N, int64_t H, int64_t W, const at::TensorOptions& opts) {
  if constexpr (Backend::kImageChunks) {
    const int64_t bytes = c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
    return Backend::image_chunk(N, H * W * bytes);
  } else {
    return N;
  }
}

// Runs fn(c, n0, n1) for the image chunks c of [0, N > 0) (chunk images each), in
// parallel on a chunking backend.
template <class Backend, class Fn>
void for_image_chunks(int64_t N, int64_t chunk, const Fn& fn) {
  if constexpr (Backend::kImageChunks) {
    if (chunk < N) {
      Backend::for_each_range((N + chunk - 1) / chunk, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) fn(c, c * chunk, std::min(N, (c + 1) * chunk));
      });
      return;
    }
  }
  fn(int64_t{0}, int64_t{0}, N);
}

// (N, H, W) from fn(n0, n1), which returns images [n0, n1) as (n1 - n0, H, W): one call
// when chunk >= N, else the chunks run in parallel and are copied into place while
// still cached.
template <class Backend, class Fn>
at::Tensor by_image_chunks(int64_t N, int64_t chunk, int64_t H, int64_t W, const at::TensorOptions& opts,
                           const Fn& fn) {
  if constexpr (Backend::kImageChunks) {
    if (chunk < N) {
      at::Tensor out = at::empty({N, H, W}, opts);
      for_image_chunks<Backend>(N, chunk, [&](int64_t, int64_t n0, int64_t n1) {
        Backend::store_chunk(out.narrow(0, n0, n1 - n0), fn(n0, n1));
      });
      return out;
    }
  }
  return fn(0, N);
}

}  // namespace mfft
}  // namespace fastfn
