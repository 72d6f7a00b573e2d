// Shared by the CPU (.cpp) and CUDA (.cu) translation units: per-element math
// written once, marked so nvcc compiles it for the device too.
#pragma once

#if defined(__CUDACC__)
#define FASTFN_HD __host__ __device__ __forceinline__
#else
#define FASTFN_HD inline
#endif

// A hint that p will be read soon: the CPU's software prefetch (it never faults, so p
// may run past the data); nothing on the device, whose loads are coalesced instead.
FASTFN_HD void prefetch_for_read(const void* p) {
#if defined(__GNUC__) && !defined(__CUDA_ARCH__)
  __builtin_prefetch(p, 0, 3);
#else
  (void)p;
#endif
}
