// Shared by the CPU (.cpp) and CUDA (.cu) translation units: per-element math
// written once, marked so nvcc compiles it for the device too.
#pragma once

#if defined(__CUDACC__)
#define FASTFN_HD __host__ __device__ __forceinline__
#else
#define FASTFN_HD inline
#endif
