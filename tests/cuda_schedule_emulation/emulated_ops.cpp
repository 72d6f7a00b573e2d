// Test-only CPU backends that run the CUDA backends' schedule: the host code the CUDA
// kernels run (masked_fft_forward.h, masked_fft_backward.h, features_device.h), the
// whole batch per pass, the launch shapes of common/cuda_grid.h and the per-thread
// bodies of the kernels, with every thread of a grid visited one by one, in forward or
// in reverse order. Registered as the ops of the `fastfn_emu` namespace (the schemas of
// `fastfn`); tests/schedule_emulation.py builds and loads it.
//
// The limits are small (a few threads, a few blocks) so that the grid-stride loops
// iterate many times on test-sized inputs; fastfn_emu::_set_schedule changes them.
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/cuda_grid.h"
#include "common/op_schemas.h"
#include "features/features_device.h"
#include "masked_fft/masked_fft_backward.h"
#include "masked_fft/masked_fft_cache_ops.h"
#include "masked_fft/masked_fft_cuda_schedule.h"

namespace fastfn {
namespace emulation {
namespace {

struct Schedule {
  grid::Limits limits{8, 2, 2, 3};
  int64_t max_lanes = 4;  // threads of a feature step's block
  bool reverse = false;
};

Schedule& schedule() {
  static Schedule s;
  return s;
}

// Calls body(t) for t in [0, n), in the schedule's order.
template <class Body>
void visit(int64_t n, const Body& body) {
  if (schedule().reverse) {
    for (int64_t t = n - 1; t >= 0; --t) body(t);
  } else {
    for (int64_t t = 0; t < n; ++t) body(t);
  }
}

struct NoGuard {
  explicit NoGuard(c10::Device) {}
};

struct EmulatedMaskedFftBackend : mfft::cuda_schedule::WholeBatchSchedule {
  using DeviceGuard = NoGuard;
  static bool reuse_allowed() { return true; }
  template <class F>
  static void launch(const F& f, int64_t rows, int64_t inner) {
    if (rows == 0 || inner == 0) return;
    const grid::Shape2d s = mfft::cuda_schedule::pass_shape(rows, inner, schedule().limits);
    const int64_t sx = s.stride_x(), sy = s.stride_y();
    visit(sx * sy, [&](int64_t t) { grid::grid_stride_2d(f, rows, inner, t % sx, t / sx, sx, sy); });
  }
};

struct PlainAdd {
  template <typename T>
  void operator()(T* p, T v) const {
    *p += v;
  }
};

struct PlainMin {
  void operator()(int64_t* p, int64_t v) const { *p = std::min(*p, v); }
};

struct EmulatedFeatureBackend {
  using DeviceGuard = NoGuard;
  static void check_index(const features::IndexCheck& c, int64_t F) {
    const grid::Limits& lim = schedule().limits;
    const int64_t threads = grid::blocks_1d(F, lim) * lim.threads_per_block;
    visit(threads, [&](int64_t t) {
      grid::grid_stride_1d([&](int64_t f) { c.feature(f, PlainMin{}); }, F, t, threads);
    });
  }
  template <typename T>
  static void insert(const features::InsertPixels<T>& a, int64_t n_pixels) {
    const grid::Limits& lim = schedule().limits;
    const int64_t threads = grid::blocks_1d(n_pixels, lim) * lim.threads_per_block;
    visit(threads, [&](int64_t t) {
      grid::grid_stride_1d([&](int64_t i) { a.pixel(i, PlainAdd{}); }, n_pixels, t, threads);
    });
  }
  // The step kernel's block algorithm: each block in turn (blocks are independent), its
  // features in grid-stride order, each phase run by every lane before the next begins
  // (the kernel's barriers).
  template <typename T>
  static void step(const features::StepFeatures<T>& a) {
    const int64_t lanes = features::step_lanes(a.P, 1, schedule().max_lanes);
    const int64_t blocks = std::min<int64_t>(a.F, schedule().limits.max_blocks_x);
    std::vector<T> sums(lanes);
    std::vector<int64_t> counts(lanes);
    visit(blocks, [&](int64_t b) {
      for (int64_t f = b; f < a.F; f += blocks) {
        T scale = T(1);
        if (a.normalize) {
          std::fill(sums.begin(), sums.end(), std::numeric_limits<T>::quiet_NaN());
          visit(lanes, [&](int64_t l) { a.lane_sums(f, l, lanes, sums[l], counts[l]); });
          for (int64_t s = lanes / 2; s > 0; s >>= 1) {
            visit(lanes, [&](int64_t l) { features::StepFeatures<T>::reduce_level(sums.data(), counts.data(), l, s); });
          }
          scale = features::normalized_scale(sums[0], counts[0]);
        }
        visit(lanes, [&](int64_t l) { a.lane_update(f, l, lanes, scale, PlainAdd{}); });
      }
    });
  }
};

void set_schedule(int64_t threads_per_block, int64_t min_threads_x, int64_t max_blocks_x, int64_t max_blocks_y,
                  int64_t max_lanes, bool reverse) {
  TORCH_CHECK(threads_per_block > 0 && (threads_per_block & (threads_per_block - 1)) == 0,
              "threads_per_block must be a power of two");
  TORCH_CHECK(min_threads_x > 0 && (min_threads_x & (min_threads_x - 1)) == 0 && min_threads_x <= threads_per_block,
              "min_threads_x must be a power of two <= threads_per_block");
  TORCH_CHECK(max_blocks_x > 0 && max_blocks_y > 0 && max_lanes > 0, "limits must be positive");
  Schedule& s = schedule();
  s.limits = grid::Limits{static_cast<int>(threads_per_block), static_cast<int>(min_threads_x), max_blocks_x,
                          max_blocks_y};
  s.max_lanes = max_lanes;
  s.reverse = reverse;
  // a measurement prepared under the old schedule would spare the new one its gather
  mfft::MeasurementCache::instance().reset();
}

}  // namespace
}  // namespace emulation
}  // namespace fastfn

TORCH_LIBRARY(fastfn_emu, m) {
  fastfn::define_op_schemas(m);
  fastfn::mfft::define_column_cache_ops(m);
  m.def("_set_schedule(int threads_per_block, int min_threads_x, int max_blocks_x, int max_blocks_y, "
        "int max_lanes, bool reverse) -> ()",
        &fastfn::emulation::set_schedule);
}

TORCH_LIBRARY_IMPL(fastfn_emu, CPU, m) {
  using fastfn::emulation::EmulatedFeatureBackend;
  using fastfn::emulation::EmulatedMaskedFftBackend;
  m.impl("fft2c", &fastfn::mfft::fft2c<EmulatedMaskedFftBackend>);
  m.impl("ifft2c", &fastfn::mfft::ifft2c<EmulatedMaskedFftBackend>);
  m.impl("undersample", &fastfn::mfft::undersample<EmulatedMaskedFftBackend>);
  m.impl("data_consistency", &fastfn::mfft::data_consistency<EmulatedMaskedFftBackend>);
  m.impl("data_consistency_backward", &fastfn::mfft::data_consistency_backward<EmulatedMaskedFftBackend>);
  m.impl("insert_features", &fastfn::features::insert_features_device<EmulatedFeatureBackend>);
  m.impl("feature_step", &fastfn::features::feature_step_device<EmulatedFeatureBackend>);
}
