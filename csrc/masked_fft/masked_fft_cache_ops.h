// The column caches' test and tuning ops, defined in every library that runs the column
// path (the shipped fastfn ops and the tests' emulated schedule, fastfn_emu), each about
// its own caches: counters of the plan cache (built, device_to_host, reused) and of the
// measurement cache (built, reused) for fastfn.ops.masked_fft.column_plan_counters; their
// reset; the measurements' own reset (the benchmark's one-shot cases); and the reuse
// switch of fastfn.ops.masked_fft.column_caches_disabled. Device-independent.
#pragma once

#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "masked_fft/masked_fft_columns.h"

namespace fastfn {
namespace mfft {

inline void define_column_cache_ops(torch::Library& m) {
  m.def("_column_plan_counters() -> int[]", [] {
    const PlanCounters c = ColumnPlanCache::instance().counters();
    const MeasurementCounters mc = MeasurementCache::instance().counters();
    return std::vector<int64_t>{c.built, c.device_to_host, c.reused, mc.built, mc.reused};
  });
  m.def("_column_plan_cache_reset() -> ()", [] {
    ColumnPlanCache::instance().reset();
    MeasurementCache::instance().reset();
  });
  m.def("_column_measurement_cache_reset() -> ()", [] { MeasurementCache::instance().reset(); });
  // returns the previous setting
  m.def("_set_column_cache_reuse(bool enabled) -> bool",
        [](bool enabled) { return column_reuse_enabled().exchange(enabled); });
}

}  // namespace mfft
}  // namespace fastfn
