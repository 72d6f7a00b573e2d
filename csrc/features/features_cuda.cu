// CUDA kernels of the feature family; shapes and semantics in features.h, the per-thread
// bodies and the host code in features_device.h (shared with the schedule emulation of
// the tests). Here only the launches: 1D grid-stride kernels for the index check and the
// insertion (one thread per feature pixel, atomic adds: pixels of a feature may repeat),
// and one block per feature for the step (grid-stride over the features), its shared
// memory tree for the normalised mode.
// (c10's stream header, not ATen/cuda/CUDAContext.h: that one pulls in cuSPARSE
// headers, which a toolkit without the math libraries lacks.)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/cuda_grid.h"
#include "features/features_device.h"

namespace fastfn {
namespace features {
namespace {

constexpr int kMaxLanes = 256;

struct AtomicAdd {
  template <typename T>
  __device__ void operator()(T* p, T v) const {
    atomicAdd(p, v);
  }
};

struct AtomicMin {
  __device__ void operator()(int64_t* p, int64_t v) const {
    atomicMin(reinterpret_cast<long long*>(p), static_cast<long long>(v));
  }
};

__global__ void check_kernel(IndexCheck c, int64_t F) {
  grid::grid_stride_1d([&](int64_t f) { c.feature(f, AtomicMin{}); }, F,
                       static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                       static_cast<int64_t>(blockDim.x) * gridDim.x);
}

template <typename T>
__global__ void insert_kernel(InsertPixels<T> a, int64_t n_pixels) {
  grid::grid_stride_1d([&](int64_t t) { a.pixel(t, AtomicAdd{}); }, n_pixels,
                       static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                       static_cast<int64_t>(blockDim.x) * gridDim.x);
}

template <typename T>
__global__ void step_kernel(StepFeatures<T> a) {
  __shared__ T s_sum[kMaxLanes];
  __shared__ int64_t s_cnt[kMaxLanes];
  const int64_t lane = threadIdx.x, lanes = blockDim.x;
  for (int64_t f = blockIdx.x; f < a.F; f += gridDim.x) {
    T scale = T(1);
    if (a.normalize) {
      a.lane_sums(f, lane, lanes, s_sum[lane], s_cnt[lane]);
      __syncthreads();
      for (int64_t s = lanes / 2; s > 0; s >>= 1) {
        StepFeatures<T>::reduce_level(s_sum, s_cnt, lane, s);
        __syncthreads();
      }
      scale = normalized_scale(s_sum[0], s_cnt[0]);
      __syncthreads();  // every lane has read the total before the next feature's sums
    }
    a.lane_update(f, lane, lanes, scale, AtomicAdd{});
  }
}

struct CudaFeatureBackend {
  using DeviceGuard = c10::cuda::CUDAGuard;
  static void check_index(const IndexCheck& c, int64_t F) {
    const int64_t blocks = grid::blocks_1d(F, grid::kCudaLimits);
    check_kernel<<<static_cast<unsigned>(blocks), grid::kCudaLimits.threads_per_block, 0,
                   c10::cuda::getCurrentCUDAStream()>>>(c, F);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename T>
  static void insert(const InsertPixels<T>& a, int64_t n_pixels) {
    const int64_t blocks = grid::blocks_1d(n_pixels, grid::kCudaLimits);
    insert_kernel<T><<<static_cast<unsigned>(blocks), grid::kCudaLimits.threads_per_block, 0,
                       c10::cuda::getCurrentCUDAStream()>>>(a, n_pixels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename T>
  static void step(const StepFeatures<T>& a) {
    const int64_t lanes = step_lanes(a.P, 32, kMaxLanes);
    const int64_t blocks = std::min<int64_t>(a.F, grid::kCudaLimits.max_blocks_x);
    step_kernel<T><<<static_cast<unsigned>(blocks), static_cast<unsigned>(lanes), 0,
                     c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace
}  // namespace features
}  // namespace fastfn

TORCH_LIBRARY_IMPL(fastfn, CUDA, m) {
  using fastfn::features::CudaFeatureBackend;
  m.impl("insert_features", &fastfn::features::insert_features_device<CudaFeatureBackend>);
  m.impl("feature_step", &fastfn::features::feature_step_device<CudaFeatureBackend>);
}
