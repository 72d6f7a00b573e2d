// CPU kernels of the masked-FFT ops: ATen's FFT plus the fused passes of
// masked_fft.h, each row of the innermost dimension handled by one iteration of
// at::parallel_for (one index decode per row).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "masked_fft/masked_fft_impl.h"

namespace fastfn {
namespace mfft {
namespace {

struct CpuBackend {
  static constexpr bool kSplitSmall2d = true;
  template <class F>
  static void launch(const F& f, int64_t rows, int64_t inner) {
    if (rows == 0 || inner == 0) return;
    const int64_t grain = std::max<int64_t>(1, 32768 / inner);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) f(r, 0, inner);
    });
  }
};

at::Tensor fft2c_cpu(const at::Tensor& x) { return centred_fft<CpuBackend>(x, true); }
at::Tensor ifft2c_cpu(const at::Tensor& k) { return centred_fft<CpuBackend>(k, false); }

}  // namespace
}  // namespace mfft
}  // namespace fastfn

TORCH_LIBRARY_IMPL(fastfn, CPU, m) {
  using fastfn::mfft::CpuBackend;
  m.impl("fft2c", &fastfn::mfft::fft2c_cpu);
  m.impl("ifft2c", &fastfn::mfft::ifft2c_cpu);
  m.impl("undersample", &fastfn::mfft::undersample<CpuBackend>);
  m.impl("data_consistency", &fastfn::mfft::data_consistency<CpuBackend>);
  m.impl("data_consistency_backward", &fastfn::mfft::data_consistency_backward<CpuBackend>);
}
