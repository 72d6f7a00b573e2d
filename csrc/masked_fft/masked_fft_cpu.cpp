// CPU kernels of the masked-FFT ops: the host code of masked_fft_forward.h and
// masked_fft_backward.h with a Backend (masked_fft_schedule.h) that runs each pass row
// by row under at::parallel_for (one index decode per row) and the column path in
// cache-sized image chunks, one per task.
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <c10/core/Device.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "masked_fft/masked_fft_backward.h"
#include "masked_fft/masked_fft_cache_ops.h"

namespace fastfn {
namespace mfft {
namespace {

struct CpuBackend {
  static constexpr bool kSplitSmall2d = true;
  static constexpr bool kImageChunks = true;
  static constexpr int64_t kColumnTileRows = 8;
  static constexpr bool kFoldInverseScale = false;  // pocketfft/MKL fold by_n into the transform
  static constexpr bool kGatherRowsFastest = false;  // GatherColumns' tiles, prefetched
  struct DeviceGuard {
    explicit DeviceGuard(c10::Device) {}
  };
  static bool reuse_allowed() { return true; }
  // Images per task of the column path: about 1 MiB of image data (an L2 share of its
  // working set), never so many that a thread would be left without a chunk. One chunk
  // (the whole batch, its passes parallel inside) when there are fewer images than
  // threads.
  static int64_t image_chunk(int64_t images, int64_t image_bytes) {
    const int64_t threads = at::get_num_threads();
    if (images < 2 || images < threads) return images;
    const int64_t fit = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, image_bytes));
    return std::min(fit, (images + threads - 1) / threads);
  }
  // Splits [0, count) into one contiguous range per thread and runs fn(c0, c1) on each;
  // ATen calls and launches inside run single-threaded. at::parallel_for's worker threads
  // do not inherit the caller's dispatcher state (below autograd, grad mode, inference
  // mode), so the ATen calls fn makes would dispatch as if from outside the op; the guard
  // carries that state over.
  template <class F>
  static void for_each_range(int64_t count, const F& fn) {
    const at::ThreadLocalState state;
    at::parallel_for(0, count, 1, [&](int64_t c0, int64_t c1) {
      const at::ThreadLocalStateGuard guard(state);
      fn(c0, c1);
    });
  }
  // Copies a chunk's result, still in cache, into its place in the output (both
  // contiguous, same size) with streaming stores: the op never reads the output again,
  // and skipping the read-for-ownership of its lines halves the copy's memory traffic.
  static void store_chunk(const at::Tensor& dst, const at::Tensor& src) {
    TORCH_INTERNAL_ASSERT(dst.is_contiguous() && src.is_contiguous() && dst.nbytes() == src.nbytes());
    const int64_t bytes = static_cast<int64_t>(src.nbytes());
    char* d = static_cast<char*>(dst.data_ptr());
    const char* s = static_cast<const char*>(src.const_data_ptr());
#if defined(__SSE2__)
    const int64_t head = std::min<int64_t>(bytes, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
    std::memcpy(d, s, head);
    int64_t i = head;
    for (; i + 64 <= bytes; i += 64) {
      for (int64_t j = 0; j < 64; j += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + j));
        _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + j), v);
      }
    }
    std::memcpy(d + i, s + i, bytes - i);
    _mm_sfence();  // the streamed lines are visible before the task ends
#else
    std::memcpy(d, s, bytes);
#endif
  }
  template <class F>
  static void launch(const F& f, int64_t rows, int64_t inner) {
    if (rows == 0 || inner == 0) return;
    const int64_t grain = std::max<int64_t>(1, 32768 / inner);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) f(r, 0, inner);
    });
  }
};

}  // namespace
}  // namespace mfft
}  // namespace fastfn

TORCH_LIBRARY_FRAGMENT(fastfn, m) { fastfn::mfft::define_column_cache_ops(m); }

TORCH_LIBRARY_IMPL(fastfn, CPU, m) {
  using fastfn::mfft::CpuBackend;
  m.impl("fft2c", &fastfn::mfft::fft2c<CpuBackend>);
  m.impl("ifft2c", &fastfn::mfft::ifft2c<CpuBackend>);
  m.impl("undersample", &fastfn::mfft::undersample<CpuBackend>);
  m.impl("data_consistency", &fastfn::mfft::data_consistency<CpuBackend>);
  m.impl("data_consistency_backward", &fastfn::mfft::data_consistency_backward<CpuBackend>);
}
