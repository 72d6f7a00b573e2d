// The CUDA backend's schedule of the masked-FFT passes, free of CUDA headers: every pass
// is one 2D grid-stride launch over (rows, inner) with the launch shape of
// common/cuda_grid.h, and the whole batch runs in one pass (no image chunks, no split 2D
// FFTs). masked_fft_cuda.cu launches it; the test-only CPU backend of
// tests/cuda_schedule_emulation includes it too and runs the same loops thread by thread.
#pragma once

#include <cstdint>

#include "common/cuda_grid.h"

namespace fastfn {
namespace mfft {
namespace cuda_schedule {

// The grid of a pass over rows x inner elements under the given limits.
inline grid::Shape2d pass_shape(int64_t rows, int64_t inner, const grid::Limits& lim = grid::kCudaLimits) {
  return grid::shape_2d(rows, inner, lim);
}

// The policy half of the Backend contract (masked_fft_schedule.h): cuFFT plans a 2D
// transform as one (no split), every pass covers the whole batch in one launch (no image
// chunks: nothing to keep in a cache between passes), and the column passes give each
// thread one image row (no row tiles: a thread's serial loop over 8 rows would leave
// most of the device idle), and the 1/W of the column path's inverse FFTs along W goes
// into a pass of ours (cuFFT does not normalise: ATen's by_n would be a pass of its own),
// and the gather of k0's sampled columns runs with the image row fastest, so that a warp
// writes a contiguous stretch of the (N, K, H) buffer (GatherColumnRows).
struct WholeBatchSchedule {
  static constexpr bool kSplitSmall2d = false;
  static constexpr bool kImageChunks = false;
  static constexpr int64_t kColumnTileRows = 1;
  static constexpr bool kFoldInverseScale = true;
  static constexpr bool kGatherRowsFastest = true;
};

}  // namespace cuda_schedule
}  // namespace mfft
}  // namespace fastfn
