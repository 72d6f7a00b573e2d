// CUDA kernels of the feature family; shapes and semantics in features.h.
//
// insert: one thread per feature pixel (N*R*P); pixels of one feature may repeat,
// so intensities are added atomically; ring marks are idempotent stores of 1.
// step: one block per feature (N*R), a block reduction for the normalised mode.
// (c10's stream header, not ATen/cuda/CUDAContext.h: that one pulls in cuSPARSE
// headers, which a toolkit without the math libraries lacks.)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/types.h>

#include <tuple>

#include "features/features.h"
#include "features/features_check.h"

namespace fastfn {
namespace features {
namespace {

constexpr int kThreads = 256;

// One host sync per call: indices outside [-1, H*W) and features without pixels
// are reported with the same messages as on CPU (the attack inserts once per
// batch of restarts, so this costs one scalar copy per batch).
void check_index_values_cuda(const at::Tensor& index, int64_t HW, const char* op) {
  auto bad_range = ((index < -1) | (index >= HW)).any();
  auto empty = (index < 0).all(2).any();
  auto flags = at::stack({bad_range, empty}).cpu();
  const bool* f = flags.data_ptr<bool>();
  if (f[0]) {
    auto pos = ((index < -1) | (index >= HW)).nonzero().select(0, 0).cpu();
    const int64_t* p = pos.data_ptr<int64_t>();
    TORCH_CHECK(false, op, ": index[", p[0], ", ", p[1], ", ", p[2], "] = ",
                index[p[0]][p[1]][p[2]].item<int64_t>(),
                " lies outside the image (valid: 0 <= index < H*W = ", HW, ", or -1 for padding)");
  }
  if (f[1]) {
    auto pos = (index < 0).all(2).nonzero().select(0, 0).cpu();
    const int64_t* p = pos.data_ptr<int64_t>();
    TORCH_CHECK(false, op, ": feature [", p[0], ", ", p[1], "] has an empty support (every index is -1)");
  }
}

template <typename T>
__global__ void insert_kernel(const int64_t* __restrict__ idx, const T* __restrict__ val, T* __restrict__ out,
                              T* __restrict__ region, int64_t n_pixels, int64_t P, int64_t H, int64_t W,
                              int64_t ring) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n_pixels) return;
  const int64_t i = idx[t];
  if (i < 0) return;
  const int64_t f = t / P;
  const int64_t HW = H * W;
  atomicAdd(out + f * HW + i, val[t]);
  mark_ring(region + f * HW, i, H, W, ring);
}

std::tuple<at::Tensor, at::Tensor> insert_features_cuda(const at::Tensor& images, const at::Tensor& index,
                                                        const at::Tensor& values, int64_t ring) {
  check_insert_args(images, index, values, ring, "insert_features");
  c10::cuda::CUDAGuard guard(images.device());
  const int64_t N = images.size(0), H = images.size(1), W = images.size(2), R = index.size(1);
  auto idx = index.contiguous();
  auto val = values.contiguous();
  auto out = at::empty({N, R, H, W}, images.options());
  out.copy_(images.unsqueeze(1).expand({N, R, H, W}));
  auto region = at::zeros({N, R, H, W}, images.options());
  if (out.numel() == 0 || idx.numel() == 0) return {out, region};
  check_index_values_cuda(idx, H * W, "insert_features");
  const int64_t n_pixels = idx.numel();
  const int blocks = static_cast<int>((n_pixels + kThreads - 1) / kThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "insert_features_cuda", [&] {
    insert_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(idx.data_ptr<int64_t>(), val.data_ptr<scalar_t>(),
                                                            out.data_ptr<scalar_t>(), region.data_ptr<scalar_t>(),
                                                            n_pixels, idx.size(2), H, W, ring);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, region};
}

template <typename T>
__global__ void step_kernel(T* __restrict__ pert, T* __restrict__ val, const int64_t* __restrict__ idx,
                            const T* __restrict__ grad, const T* __restrict__ lo, const T* __restrict__ hi,
                            const T* __restrict__ step, int64_t P, int64_t HW, bool normalize) {
  const int64_t f = blockIdx.x;
  const int64_t* fi = idx + f * P;
  const T* gf = grad + f * HW;
  T scale = T(1);
  if (normalize) {
    __shared__ T s_sum[kThreads];
    __shared__ int64_t s_cnt[kThreads];
    T sum = T(0);
    int64_t cnt = 0;
    for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
      const int64_t i = fi[p];
      if (i < 0 || i >= HW) continue;
      sum += gf[i] * gf[i];
      ++cnt;
    }
    s_sum[threadIdx.x] = sum;
    s_cnt[threadIdx.x] = cnt;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) {
        s_sum[threadIdx.x] += s_sum[threadIdx.x + s];
        s_cnt[threadIdx.x] += s_cnt[threadIdx.x + s];
      }
      __syncthreads();
    }
    scale = normalized_scale(s_sum[0], s_cnt[0]);
  }
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
    const int64_t i = fi[p];
    if (i < 0 || i >= HW) continue;
    const T g = gf[i];
    const T d = normalize ? g * scale : sign_of(g);
    const T v = val[f * P + p];
    const T v_new = projected_step(v, d, step[f], lo[f], hi[f]);
    val[f * P + p] = v_new;
    atomicAdd(pert + f * HW + i, v_new - v);
  }
}

void feature_step_cuda(at::Tensor& perturbed, at::Tensor& values, const at::Tensor& index, const at::Tensor& grad,
                       const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& step, bool normalize) {
  check_step_args(perturbed, values, index, grad, lo, hi, step, "feature_step");
  c10::cuda::CUDAGuard guard(perturbed.device());
  if (values.numel() == 0) return;
  // Indices were validated by insert_features; re-validating here would cost a
  // host sync per attack step, so the kernel only skips (never writes through)
  // an index outside [0, H*W). The CPU kernel validates, as it costs nothing there.
  auto g = grad.contiguous();
  auto l = lo.contiguous();
  auto h = hi.contiguous();
  auto s = step.contiguous();
  const int64_t F = index.size(0) * index.size(1);
  const int64_t P = index.size(2);
  int threads = 32;
  while (threads < P && threads < kThreads) threads <<= 1;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(perturbed.scalar_type(), "feature_step_cuda", [&] {
    step_kernel<scalar_t><<<static_cast<unsigned>(F), threads, 0, stream>>>(
        perturbed.data_ptr<scalar_t>(), values.data_ptr<scalar_t>(), index.data_ptr<int64_t>(),
        g.data_ptr<scalar_t>(), l.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), P,
        perturbed.size(2) * perturbed.size(3), normalize);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace
}  // namespace features
}  // namespace fastfn

TORCH_LIBRARY_IMPL(fastfn, CUDA, m) {
  m.impl("insert_features", &fastfn::features::insert_features_cuda);
  m.impl("feature_step", &fastfn::features::feature_step_cuda);
}
