// CUDA kernels of the masked-FFT ops: the host code of masked_fft_forward.h and
// masked_fft_backward.h with cuFFT through ATen (its plan cache, the current stream) and
// one 2D grid-stride kernel that runs any pass, one element per thread, on the schedule of
// masked_fft_cuda_schedule.h. Only the launch and the device guard are CUDA-specific here.
// c10's stream header rather than ATen/cuda/CUDAContext.h (which pulls in cuSPARSE/cuBLAS
// headers the pip CUDA wheels place outside CUDA_HOME); at::cuda::getCurrentCUDAStream is
// this same c10 function.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "masked_fft/masked_fft_backward.h"
#include "masked_fft/masked_fft_cuda_schedule.h"

namespace fastfn {
namespace mfft {
namespace {

template <class F>
__global__ void grid_stride_kernel(F f, int64_t rows, int64_t inner) {
  grid::grid_stride_2d(f, rows, inner, static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                       static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y,
                       static_cast<int64_t>(blockDim.x) * gridDim.x, static_cast<int64_t>(blockDim.y) * gridDim.y);
}

struct CudaBackend : cuda_schedule::WholeBatchSchedule {
  using DeviceGuard = c10::cuda::CUDAGuard;
  static bool reuse_allowed() {
    return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
  }
  template <class F>
  static void launch(const F& f, int64_t rows, int64_t inner) {
    if (rows == 0 || inner == 0) return;
    const grid::Shape2d s = cuda_schedule::pass_shape(rows, inner);
    const dim3 blocks(static_cast<unsigned>(s.blocks_x), static_cast<unsigned>(s.blocks_y));
    const dim3 threads(static_cast<unsigned>(s.threads_x), static_cast<unsigned>(s.threads_y));
    grid_stride_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(f, rows, inner);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace
}  // namespace mfft
}  // namespace fastfn

TORCH_LIBRARY_IMPL(fastfn, CUDA, m) {
  using fastfn::mfft::CudaBackend;
  m.impl("fft2c", &fastfn::mfft::fft2c<CudaBackend>);
  m.impl("ifft2c", &fastfn::mfft::ifft2c<CudaBackend>);
  m.impl("undersample", &fastfn::mfft::undersample<CudaBackend>);
  m.impl("data_consistency", &fastfn::mfft::data_consistency<CudaBackend>);
  m.impl("data_consistency_backward", &fastfn::mfft::data_consistency_backward<CudaBackend>);
}
