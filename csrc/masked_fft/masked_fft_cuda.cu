// CUDA kernels of the masked-FFT ops: cuFFT through ATen (its plan cache, the
// current stream) plus one grid-stride kernel that runs any pass of masked_fft.h,
// one element per thread. Only indexing and launch are CUDA-specific here.
// c10's stream header rather than ATen/cuda/CUDAContext.h (which pulls in cuSPARSE/cuBLAS
// headers the pip CUDA wheels place outside CUDA_HOME); at::cuda::getCurrentCUDAStream is
// this same c10 function.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "masked_fft/masked_fft_backward.h"

namespace fastfn {
namespace mfft {
namespace {

template <class F>
__global__ void rows_kernel(F f, int64_t rows, int64_t inner) {
  const int64_t total = rows * inner;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / inner, j = i - r * inner;
    f(r, j, j + 1);
  }
}

struct CudaBackend {
  static constexpr bool kSplitSmall2d = false;
  // The GPU takes the whole batch in one pass each: no image chunks.
  static int64_t image_chunk(int64_t images, int64_t) { return images; }
  template <class F>
  static void for_each_range(int64_t count, const F& fn) {
    if (count > 0) fn(int64_t{0}, count);
  }
  // Never reached (one chunk), there for the shared host code.
  static void store_chunk(const at::Tensor& dst, const at::Tensor& src) { dst.copy_(src); }
  template <class F>
  static void launch(const F& f, int64_t rows, int64_t inner) {
    const int64_t total = rows * inner;
    if (total == 0) return;
    constexpr int threads = 256;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 16);
    rows_kernel<<<static_cast<unsigned>(blocks), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(f, rows, inner);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor fft2c_cuda(const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  return centred_fft<CudaBackend>(x, true);
}

at::Tensor ifft2c_cuda(const at::Tensor& k) {
  const c10::cuda::CUDAGuard guard(k.device());
  return centred_fft<CudaBackend>(k, false);
}

at::Tensor undersample_cuda(const at::Tensor& x, const at::Tensor& mask) {
  const c10::cuda::CUDAGuard guard(x.device());
  return undersample<CudaBackend>(x, mask);
}

at::Tensor dc_cuda(const at::Tensor& x, const at::Tensor& k0, const at::Tensor& mask,
                   const c10::optional<at::Tensor>& sens, const c10::optional<at::Tensor>& lam) {
  const c10::cuda::CUDAGuard guard(x.device());
  return data_consistency<CudaBackend>(x, k0, mask, sens, lam);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dc_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& k0, const at::Tensor& mask,
    const c10::optional<at::Tensor>& sens, const c10::optional<at::Tensor>& lam,
    std::array<bool, 4> output_mask) {
  const c10::cuda::CUDAGuard guard(x.device());
  return data_consistency_backward<CudaBackend>(grad, x, k0, mask, sens, lam, output_mask);
}

}  // namespace
}  // namespace mfft
}  // namespace fastfn

TORCH_LIBRARY_IMPL(fastfn, CUDA, m) {
  m.impl("fft2c", &fastfn::mfft::fft2c_cuda);
  m.impl("ifft2c", &fastfn::mfft::ifft2c_cuda);
  m.impl("undersample", &fastfn::mfft::undersample_cuda);
  m.impl("data_consistency", &fastfn::mfft::dc_cuda);
  m.impl("data_consistency_backward", &fastfn::mfft::dc_backward_cuda);
}
