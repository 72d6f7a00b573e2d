// The CUDA backend's schedule of the masked-FFT passes, free of CUDA headers: the
// grid-stride loop with its launch shape, and the whole-batch policy. masked_fft_cuda.cu
// launches it; a CPU translation unit can include it too, to run the passes in the order
// and with the index splits the GPU uses (threads of a grid visited one by one).
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/hostdevice.h"

namespace fastfn {
namespace mfft {
namespace cuda_schedule {

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

// Blocks of the grid for `total` elements: one element per thread up to kMaxBlocks
// blocks; beyond that each thread loops over several.
inline int64_t grid_blocks(int64_t total) {
  return std::min<int64_t>((total + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks);
}

// The elements one thread of the grid handles: element i = row * inner + j from its
// index `thread` (blockIdx * blockDim + threadIdx) on, every `threads` (blockDim *
// gridDim), each as f(row, j, j + 1).
template <class F>
FASTFN_HD void grid_stride_loop(const F& f, int64_t rows, int64_t inner, int64_t thread, int64_t threads) {
  const int64_t total = rows * inner;
  for (int64_t i = thread; i < total; i += threads) {
    const int64_t r = i / inner, j = i - r * inner;
    f(r, j, j + 1);
  }
}

// The policy half of the Backend contract (masked_fft_schedule.h): cuFFT plans a 2D
// transform as one (no split), and every pass covers the whole batch in one launch
// (no image chunks: nothing to keep in a cache between passes).
struct WholeBatchSchedule {
  static constexpr bool kSplitSmall2d = false;
  static constexpr bool kImageChunks = false;
};

}  // namespace cuda_schedule
}  // namespace mfft
}  // namespace fastfn
