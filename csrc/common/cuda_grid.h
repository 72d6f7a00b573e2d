// The launch shapes and grid-stride loops of fastfn's CUDA kernels, free of CUDA headers:
// the .cu files launch them, and the schedule emulation of the tests
// (tests/cuda_schedule_emulation) runs the same loops on the CPU, thread by thread,
// with small limits so that every loop iterates many times.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/hostdevice.h"

namespace fastfn {
namespace grid {

// What a launch may use: threads per block and blocks per grid dimension.
struct Limits {
  int threads_per_block;  // a power of two
  int min_threads_x;      // a power of two, at most threads_per_block
  int64_t max_blocks_x, max_blocks_y;
};

// CUDA's: 256 threads a block, at most 2^16 blocks along x and 65535 (the hardware
// limit) along y.
constexpr Limits kCudaLimits{256, 32, int64_t{1} << 16, 65535};

// A 2D grid over rows x inner elements: x (the fastest thread index) runs along inner,
// the contiguous dimension of every pass, y along rows, so no thread divides an element
// index to find its row.
struct Shape2d {
  int threads_x = 1, threads_y = 1;
  int64_t blocks_x = 0, blocks_y = 0;
  int64_t stride_x() const { return blocks_x * threads_x; }
  int64_t stride_y() const { return blocks_y * threads_y; }
};

// Threads along x: a power of two from min_threads_x up to the block, enough for inner;
// the rest of the block along y.
inline Shape2d shape_2d(int64_t rows, int64_t inner, const Limits& lim) {
  Shape2d s;
  int tx = lim.min_threads_x;
  while (tx < lim.threads_per_block && tx < inner) tx *= 2;
  s.threads_x = tx;
  s.threads_y = lim.threads_per_block / tx;
  s.blocks_x = std::min<int64_t>((inner + tx - 1) / tx, lim.max_blocks_x);
  s.blocks_y = std::min<int64_t>((rows + s.threads_y - 1) / s.threads_y, lim.max_blocks_y);
  return s;
}

// The elements of thread (x, y) of a 2D grid (x = blockIdx.x * blockDim.x + threadIdx.x,
// likewise y; strides: the grid's threads along x and y), each as f(row, j, j + 1).
template <class F>
FASTFN_HD void grid_stride_2d(const F& f, int64_t rows, int64_t inner, int64_t x, int64_t y, int64_t stride_x,
                              int64_t stride_y) {
  for (int64_t r = y; r < rows; r += stride_y) {
    for (int64_t j = x; j < inner; j += stride_x) f(r, j, j + 1);
  }
}

// Blocks of a 1D grid of threads_per_block threads for `total` items.
inline int64_t blocks_1d(int64_t total, const Limits& lim) {
  return std::min<int64_t>((total + lim.threads_per_block - 1) / lim.threads_per_block, lim.max_blocks_x);
}

// The items of thread `thread` of a 1D grid of `threads` threads, each as f(i).
template <class F>
FASTFN_HD void grid_stride_1d(const F& f, int64_t total, int64_t thread, int64_t threads) {
  for (int64_t i = thread; i < total; i += threads) f(i);
}

}  // namespace grid
}  // namespace fastfn
