// The column path of data consistency (a column mask, Hm == 1): the data are
// X = fft_W(S x) and G = fft_W(S g) (image rows, k-space columns), the measurement is
// h0 = F_{c,H}^-1 k0 on the K sampled columns only, and the DC passes visit only those
// columns: the inverse FFT along W that follows divides by W itself, so unsampled bins
// need no pass at all. Also the column plan: which columns are sampled, built on the host.
//
// The passes here work on tiles of kRows image rows (a template parameter, the
// Backend's kColumnTileRows): a "row" of theirs is (n, block), rows
// n * row_blocks<kRows>(H) + hb, covering h in [hb * kRows, ...). On the CPU (8 rows)
// each call visits the tile's rows together for each sampled column, so the (N, K, H)
// measurement buffer is read or written a whole cache line at a time instead of one
// element per line (a row-at-a-time pass there touches K scattered lines per row). On
// CUDA (1 row) each thread handles one row and one slot, and the threads of a warp run
// along the slots. Tiles count from the first image of the chunk they run on (n0); the
// pointers they hold point at that image.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "masked_fft/masked_fft.h"
#include "masked_fft/masked_fft_check.h"

namespace fastfn {
namespace mfft {

template <int64_t kRows>
FASTFN_HD int64_t row_blocks(int64_t H) {
  return (H + kRows - 1) / kRows;
}

// Rows [h0, h1) of image n in tile `tile` (of n * row_blocks<kRows>(H) + hb).
template <int64_t kRows>
struct RowTile {
  int64_t n, h0, h1;
  FASTFN_HD RowTile(int64_t tile, int64_t H) {
    if (kRows == 1) {
      n = tile / H;
      h0 = tile - n * H;
      h1 = h0 + 1;
      return;
    }
    const int64_t nb = row_blocks<kRows>(H);
    n = tile / nb;
    h0 = (tile % nb) * kRows;
    h1 = h0 + kRows < H ? h0 + kRows : H;
  }
};

// Gathers the sampled columns of k0, with the pre-phase r_H of F_{c,H}^-1, into a
// contiguous (N, K, H) buffer (then transformed along H, its last dim):
// out[n, q, h] = r_H[h] * k0[n, h, idx[bm, q]]. Inner index: gather slots [0, K).
template <typename T, int64_t kRows>
struct GatherColumns {
  const cx<T>* k0;
  const int64_t* idx;  // (Bm, K)
  cx<T>* out;          // (N, K, H)
  int64_t C, H, W, K, Bm, n0;
  PhaseRamp<T> rh;
  FASTFN_HD void operator()(int64_t tile, int64_t q0, int64_t q1) const {
    const RowTile<kRows> t(tile, H);
    const int64_t bm = Bm == 1 ? 0 : (n0 + t.n) / C;
    const int64_t* cols = idx + bm * K;
    cx<T> ph[kRows];
    for (int64_t h = t.h0; h < t.h1; ++h) ph[h - t.h0] = rh(h);
    const cx<T>* src = k0 + (t.n * H + t.h0) * W;
    const int64_t rows = t.h1 - t.h0;
    // k0 is read once, from memory, at scattered columns: the CPU asks for the lines of
    // the next tile (the next rows, of this image or the next) while it gathers this
    // one, so that the loads here do not wait on memory one by one
    const int64_t ahead = rows * W;
    for (int64_t q = q0; q < q1; ++q) {
      cx<T>* dst = out + (t.n * K + q) * H + t.h0;
      const int64_t col = cols[q];
      for (int64_t i = 0; i < rows; ++i) {
        prefetch_for_read(src + ahead + i * W + col);
        dst[i] = src[i * W + col] * ph[i];
      }
    }
  }
};

// The same gather with the image row as the inner index, for a backend whose threads run
// along the inner index (Backend::kGatherRowsFastest, CUDA): the writes to the (N, K, H)
// buffer are contiguous across consecutive threads; the reads of k0 are one element per
// row in either order, since only K of the W columns are read. Rows n * K + q (image n,
// gather slot q), inner index: h in [0, H).
template <typename T>
struct GatherColumnRows {
  const cx<T>* k0;
  const int64_t* idx;  // (Bm, K)
  cx<T>* out;          // (N, K, H)
  int64_t C, H, W, K, Bm;
  PhaseRamp<T> rh;
  FASTFN_HD void operator()(int64_t row, int64_t h0, int64_t h1) const {
    const int64_t n = row / K, q = row - n * K;
    const int64_t bm = Bm == 1 ? 0 : n / C;
    const cx<T>* src = k0 + n * H * W + idx[bm * K + q];
    cx<T>* dst = out + row * H;
    for (int64_t h = h0; h < h1; ++h) dst[h] = src[h * W] * rh(h);
  }
};

// The inverse of the gather, for grad_k0: out[n, kh, j] = factor * conj(r_H[kh]) *
// buf[n, slot[bm, j], kh] at sampled columns, 0 elsewhere. Inner index: columns [0, W).
template <typename T, int64_t kRows>
struct ScatterColumns {
  const cx<T>* buf;     // (N, K, H) transformed along H
  const int64_t* slot;  // (Bm, W), -1 where unsampled
  cx<T>* out;           // (N, H, W)
  int64_t C, H, W, K, Bm, n0;
  cx<T> factor;
  PhaseRamp<T> rh;
  FASTFN_HD void operator()(int64_t tile, int64_t w0, int64_t w1) const {
    const RowTile<kRows> t(tile, H);
    const int64_t bm = Bm == 1 ? 0 : (n0 + t.n) / C;
    cx<T> ph[kRows];
    for (int64_t kh = t.h0; kh < t.h1; ++kh) ph[kh - t.h0] = factor * conj(rh(kh));
    cx<T>* dst = out + (t.n * H + t.h0) * W;
    const int64_t rows = t.h1 - t.h0;
    for (int64_t j = w0; j < w1; ++j) {
      const int64_t sl = slot[bm * W + j];
      const cx<T>* src = buf + (t.n * K + (sl >= 0 ? sl : 0)) * H + t.h0;
      for (int64_t i = 0; i < rows; ++i) dst[i * W + j] = sl >= 0 ? src[i] * ph[i] : cx<T>(T(0), T(0));
    }
  }
};

// What the column passes of one chunk of coil images know: geometry, mask, the sampled
// columns, the chunk's measurement and lam.
template <typename T>
struct ColumnFrame {
  int64_t C, H, W;
  const T* mask;         // (Bm, 1, W), centred
  int64_t Bm;
  const int64_t* cols;   // (Bm, K): sampled columns (centred), ascending, then padding
  int64_t K;             // gather slots per image
  int64_t n0;            // the chunk's first coil image
  const cx<T>* meas;     // (chunk, K, H): ifft_H (unnormalised) of the gathered, pre-phased k0
  cx<T> meas_constant;   // c_H / sqrt(H): with r_H[h], the rest of F_{c,H}^-1
  const T* lam;          // soft DC weight source (device memory); nullptr: hard DC
  T scale;               // 1 / sqrt(W)
  PhaseRamp<T> rh, rw;   // r_H, r_W

  FASTFN_HD int64_t mask_batch(int64_t n) const { return Bm == 1 ? 0 : (n0 + n) / C; }
  // The factor of image row h that turns meas into h0 = F_{c,H}^-1 k0.
  FASTFN_HD cx<T> meas_row_factor(int64_t h) const { return meas_constant * rh(h); }
  // The measurement in the (image row h, unshifted bin p) frame at gather slot sl;
  // rh = meas_row_factor(h).
  FASTFN_HD cx<T> measured(int64_t n, int64_t h, int64_t sl, int64_t p, cx<T> rh) const {
    return meas[(n * K + sl) * H + h] * (rh * rw(p));
  }
};

// The DC blend of the spectrum at the gathered columns, in place:
// X <- (1 - w m') X + w m' h0' sqrt(W). Inner index: gather slots [0, K).
template <typename T, int64_t kRows>
struct DcBlendColumns {
  ColumnFrame<T> f;
  cx<T>* X;
  FASTFN_HD void operator()(int64_t tile, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H;
    const RowTile<kRows> t(tile, H);
    const int64_t bm = f.mask_batch(t.n);
    const T* m = f.mask + bm * W;
    const int64_t* cols = f.cols + bm * f.K;
    const T w = dc_weight(f.lam);
    const T root = T(1) / f.scale;
    cx<T> rh[kRows];  // the tile's row factors, hoisted out of the slot loop
    for (int64_t h = t.h0; h < t.h1; ++h) rh[h - t.h0] = f.meas_row_factor(h);
    cx<T>* xt = X + (t.n * H + t.h0) * W;
    const cx<T>* mt = f.meas + t.n * f.K * H + t.h0;
    const int64_t rows = t.h1 - t.h0;
    const bool ahead = t.h1 < H;  // prefetch as in DcBackwardColumns
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = cols[q];
      const T wm = w * m[jw];
      if (wm == T(0)) continue;  // padding slot (or lam = 0): X stays
      const int64_t p = plain_index(jw, W);
      const cx<T> fq = f.rw(p) * (wm * root);
      const cx<T>* mq = mt + q * H;
      if (ahead) prefetch_for_read(mq + rows);
      if (wm == T(1)) {  // a sampled column of hard DC: the measurement replaces X
        for (int64_t i = 0; i < rows; ++i) xt[i * W + p] = mq[i] * (rh[i] * fq);
      } else {
        for (int64_t i = 0; i < rows; ++i) xt[i * W + p] = xt[i * W + p] * (T(1) - wm) + mq[i] * (rh[i] * fq);
      }
    }
  }
};

// The DC blend over every column, for a backend that folds the 1/W of the inverse FFT
// along W into the pass before it (Backend::kFoldInverseScale, CUDA: ATen applies by_n
// as a pass of its own there): X <- ((1 - w m') X + w m' h0' sqrt(W)) / W at sampled
// columns, X / W elsewhere, so that the unnormalised inverse FFT along W that follows
// gives the output. One image row per call; rows n * H + h, inner index: bins [0, W).
template <typename T>
struct DcBlendRows {
  ColumnFrame<T> f;
  const int64_t* slot;  // (Bm, W): gather slot of each centred column, -1 unsampled
  cx<T>* X;
  T inverse_w;
  FASTFN_HD void operator()(int64_t row, int64_t p0, int64_t p1) const {
    const int64_t W = f.W, H = f.H;
    const int64_t n = row / H, h = row - n * H;
    const int64_t bm = f.mask_batch(n);
    const T* m = f.mask + bm * W;
    const int64_t* sl = slot + bm * W;
    const T w = dc_weight(f.lam);
    const T root = T(1) / f.scale;
    cx<T>* xr = X + row * W;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t jw = centred_index(p, W);
      const T wm = w * m[jw];
      cx<T> z = xr[p];
      if (wm != T(0)) {  // a sampled column (m != 0): its slot is >= 0
        const cx<T> meas = f.measured(n, h, sl[jw], p, f.meas_row_factor(h)) * (wm * root);
        z = wm == T(1) ? meas : z * (T(1) - wm) + meas;
      }
      xr[p] = z * inverse_w;
    }
  }
};

// The adjoint blend over every column for a backend that folds the 1/W of the inverse
// FFT along W into the pass before it (Backend::kFoldInverseScale, the single-coil
// backward on CUDA, where no pass follows the inverse): G <- (1 - w m') G / W, so that
// the unnormalised inverse FFT along W that follows gives grad_x. One image row per
// call; rows n * H + h, inner index: bins [0, W).
template <typename T>
struct DcAdjointRows {
  ColumnFrame<T> f;
  cx<T>* G;
  T inverse_w;
  FASTFN_HD void operator()(int64_t row, int64_t p0, int64_t p1) const {
    const int64_t W = f.W;
    const T* m = f.mask + f.mask_batch(row / f.H) * W;
    const T w = dc_weight(f.lam);
    cx<T>* gr = G + row * W;
    for (int64_t p = p0; p < p1; ++p) gr[p] = gr[p] * ((T(1) - w * m[centred_index(p, W)]) * inverse_w);
  }
};

// Every gradient of the column path at the gathered columns, each output optional (the
// inverse FFTs along W that follow divide by W):
//   adjoint_in_place:  G <- (1 - w m') G             (its inverse: a, the adjoint of DC
//                                                      applied to g, per coil)
//   output_in_place:   X <- (1 - w m') X + w m' h0' sqrt(W)   (DcBlendColumns; its inverse:
//                                                      u, the forward output per coil)
//   grad_k0:           grad_k0[n, q, h] = w m conj(r_W r_H) G s   (then fft_H, scattered)
//   weight_terms:      weight_terms[n, h, q] = m Re(conj(G s) (h0' - X s)), summed by the
//                      caller into grad_w
//   complement:        instead of adjoint_in_place and without X, G <- (1 - m') G (its
//                      inverse: F^-1 (1 - m') F g, for SoftDcImage) and weight_terms
//                      m Re(conj(G s) h0') only (SoftDcImage gives the X part)
// Every grad_k0 and weight_terms element is written (0 in padding slots). Inner index:
// gather slots [0, K).
template <typename T, int64_t kRows>
struct DcBackwardColumns {
  ColumnFrame<T> f;
  cx<T>* G;             // fft_W(S g)
  cx<T>* X;             // fft_W(S x): needed for weight_terms and output_in_place, else nullptr
  cx<T>* grad_k0;       // (chunk, K, H), or nullptr
  T* weight_terms;      // (chunk, H, K), or nullptr
  bool adjoint_in_place, output_in_place;
  bool complement;
  FASTFN_HD void operator()(int64_t tile, int64_t q0, int64_t q1) const {
    const int64_t W = f.W, H = f.H, K = f.K;
    const RowTile<kRows> t(tile, H);
    const int64_t n = t.n;
    const int64_t bm = f.mask_batch(n);
    const T* m = f.mask + bm * W;
    const int64_t* cols = f.cols + bm * K;
    const T s = f.scale;
    const T w = dc_weight(f.lam);
    const bool need_measurement = weight_terms != nullptr || output_in_place;
    cx<T> rh[kRows], rhc[kRows];  // the tile's row factors, hoisted out of the slot loop
    for (int64_t h = t.h0; h < t.h1; ++h) {
      rh[h - t.h0] = f.meas_row_factor(h);
      rhc[h - t.h0] = conj(f.rh(h));
    }
    // the measurement is read at (slot, rows of this tile): one line per slot, K lines
    // H apart, which no hardware prefetcher follows, so the CPU asks for the next
    // tile's line of each slot while it works on this one (no-op on CUDA)
    const bool ahead = need_measurement && t.h1 < H;
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t jw = cols[q];
      const T mq = m[jw];
      const T wm = w * mq;
      const int64_t p = plain_index(jw, W);
      const cx<T> rw = conj(f.rw(p));
      if (ahead) prefetch_for_read(f.meas + (n * K + q) * H + t.h1);
      for (int64_t h = t.h0; h < t.h1; ++h) {
        const int64_t i = (n * H + h) * W + p;
        const cx<T> go = G[i] * s;
        cx<T> kv(T(0), T(0));
        if (need_measurement && mq != T(0)) kv = f.measured(n, h, q, p, rh[h - t.h0]);
        if (weight_terms != nullptr) {
          const cx<T> xs = complement ? cx<T>(T(0), T(0)) : X[i] * s;
          weight_terms[(n * H + h) * K + q] = weight_grad_term(mq, go, kv, xs);
        }
        if (grad_k0 != nullptr) grad_k0[(n * K + q) * H + h] = go * rw * rhc[h - t.h0] * wm;
        if (complement) G[i] = G[i] * (T(1) - mq);
        if (wm == T(0)) continue;
        if (output_in_place) X[i] = X[i] * (T(1) - wm) + kv * (wm / s);
        if (adjoint_in_place) G[i] = G[i] * (T(1) - wm);
      }
    }
  }
};

// ---------------------------------------------------------------- the column plan (host)

// Where the sampled columns of a column mask are: idx (Bm, K) lists them in ascending
// order, rows with fewer than K padded with unsampled columns (distinct, never blended);
// slot (Bm, W) maps a column to its position in idx or -1. Built on the host from the
// mask's Bm x W values with no ATen kernel launches. On CUDA that costs one
// device-to-host copy of the mask (a synchronisation: K sizes the buffers); idx and slot
// go back in one asynchronous copy from pinned memory. ColumnPlanCache keeps the plans
// of recent masks, so that the DC layers of a network, forward and backward, build one.
struct ColumnPlan {
  at::Tensor idx, slot;
  int64_t K = 0;
};

inline ColumnPlan build_column_plan(const at::Tensor& mask, const Geometry& g) {
  const at::Tensor m = mask.reshape({g.Bm, g.W}).to(at::kCPU).to(at::kDouble).contiguous();
  const double* mv = m.data_ptr<double>();
  std::vector<int64_t> counts(g.Bm, 0);
  for (int64_t b = 0; b < g.Bm; ++b)
    for (int64_t j = 0; j < g.W; ++j) counts[b] += mv[b * g.W + j] != 0.0;
  ColumnPlan p;
  p.K = g.Bm == 0 ? 0 : *std::max_element(counts.begin(), counts.end());
  // idx then slot in one buffer, so that a CUDA mask needs one copy back
  const int64_t n_idx = g.Bm * p.K;
  at::Tensor packed =
      at::empty({n_idx + g.Bm * g.W}, at::TensorOptions(at::kLong).pinned_memory(mask.is_cuda()));
  int64_t* iv = packed.data_ptr<int64_t>();
  int64_t* sv = iv + n_idx;
  for (int64_t b = 0; b < g.Bm; ++b) {
    int64_t q = 0, pad = counts[b];
    for (int64_t j = 0; j < g.W; ++j) {
      const bool sampled = mv[b * g.W + j] != 0.0;
      sv[b * g.W + j] = sampled ? q : -1;
      if (sampled) iv[b * p.K + q++] = j;
      else if (pad < p.K) iv[b * p.K + pad++] = j;
    }
  }
  // non_blocking from pinned memory: ATen keeps the host block until the copy is done
  const at::Tensor on_device = packed.to(mask.device(), /*non_blocking=*/true);
  p.idx = on_device.narrow(0, 0, n_idx).view({g.Bm, p.K});
  p.slot = on_device.narrow(0, n_idx, g.Bm * g.W).view({g.Bm, g.W});
  return p;
}

// What the plan cache has done since the process started (or the last reset): plans
// built, device-to-host copies of a mask (the op's only host synchronisation), hits.
struct PlanCounters {
  int64_t built = 0, device_to_host = 0, reused = 0;
};

// Identifies a tensor's contents across op calls: the same view of the same live storage
// (held weakly: a key keeps no tensor alive) at the same version. An in-place write to
// the tensor or to any view of it bumps the version. Writes that bypass the version
// counter (through .data, from another framework's view of the memory) are not seen;
// inference tensors (no version) and tensors without storage have no key.
struct TensorKey {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  int64_t offset, version;
  at::ScalarType dtype;
  c10::Device device;
  std::vector<int64_t> sizes, strides;

  static bool keyable(const at::Tensor& t) { return !t.is_inference() && t.has_storage(); }
  static TensorKey of(const at::Tensor& t) {
    return TensorKey{t.storage().getWeakStorageImpl(), t.storage_offset(), t._version(), t.scalar_type(),
                     t.device(), t.sizes().vec(), t.strides().vec()};
  }
  bool expired() const { return storage.expired(); }
  // a weak reference keeps the StorageImpl object, so its address is not reused while
  // the key exists: equal addresses of a live storage mean the same storage
  bool matches(const at::Tensor& t) const {
    return !storage.expired() && storage._unsafe_get_target() == t.storage().unsafeGetStorageImpl() &&
           offset == t.storage_offset() && version == t._version() && dtype == t.scalar_type() &&
           device == t.device() && t.sizes().equals(sizes) && t.strides().equals(strides);
  }
};

// Whether the column caches hand out what they hold (on unless switched off). Off, every
// call builds its plan and measurement and keeps neither, as for a tensor without a key:
// for callers that write a mask or k0 past the version counter (torch.autograd.gradcheck
// perturbs its inputs through .data; NumPy and DLPack views of a tensor's memory).
// fastfn.ops.masked_fft.column_caches_disabled() switches it.
inline std::atomic<bool>& column_reuse_enabled() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

// The plans of the last kEntries masks, each reused while its mask's TensorKey matches:
// an in-place write to the mask builds a new plan; a mask without a key is planned on
// every call.
class ColumnPlanCache {
 public:
  static ColumnPlanCache& instance() {
    static ColumnPlanCache cache;
    return cache;
  }

  ColumnPlan get(const at::Tensor& mask, const Geometry& g) {
    const bool keyed = TensorKey::keyable(mask) && column_reuse_enabled().load(std::memory_order_relaxed);
    if (keyed) {
      const std::lock_guard<std::mutex> hold(lock_);
      for (const Entry& e : entries_) {
        if (e.key.matches(mask)) {
          ++counters_.reused;
          return e.plan;
        }
      }
    }
    ColumnPlan plan = build_column_plan(mask, g);
    const std::lock_guard<std::mutex> hold(lock_);
    ++counters_.built;
    if (mask.device().type() != c10::DeviceType::CPU) ++counters_.device_to_host;
    if (keyed) {
      if (entries_.size() == kEntries) entries_.pop_back();
      entries_.push_front(Entry{TensorKey::of(mask), plan});
    }
    return plan;
  }

  PlanCounters counters() {
    const std::lock_guard<std::mutex> hold(lock_);
    return counters_;
  }

  void reset() {
    const std::lock_guard<std::mutex> hold(lock_);
    entries_.clear();
    counters_ = PlanCounters{};
  }

 private:
  static constexpr size_t kEntries = 32;  // an attack batch of many chunks has a mask per chunk
  struct Entry {
    TensorKey key;
    ColumnPlan plan;
  };
  std::mutex lock_;
  std::deque<Entry> entries_;
  PlanCounters counters_;
};

// What the measurement cache has done since the process started (or the last reset).
struct MeasurementCounters {
  int64_t built = 0, reused = 0;
};

// The column path's prepared measurements of the last kEntries (k0, plan) pairs: meas
// (N, K, H), the ifft_H of k0's gathered sampled columns, reused while k0's TensorKey
// matches and the plan is the same (the plan cache hands out one plan per mask, and an
// entry holds its idx, so that a new plan cannot take its address). The DC layers of an
// unrolled network share one k0, forward and backward: one gather and one FFT along H
// per network call instead of one per layer. An entry whose k0 was freed is dropped at
// the next lookup.
class MeasurementCache {
 public:
  static MeasurementCache& instance() {
    static MeasurementCache cache;
    return cache;
  }

  // The cached measurement of k0 under plan, or an undefined tensor.
  at::Tensor find(const at::Tensor& k0, const ColumnPlan& plan) {
    if (!TensorKey::keyable(k0)) return at::Tensor();
    const std::lock_guard<std::mutex> hold(lock_);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.key.expired(); }),
                   entries_.end());
    for (const Entry& e : entries_) {
      if (e.idx.is_same(plan.idx) && e.key.matches(k0)) {
        ++counters_.reused;
        return e.meas;
      }
    }
    return at::Tensor();
  }

  // Counts a measurement built for k0 under plan and keeps it when keep is true.
  void built(const at::Tensor& k0, const ColumnPlan& plan, const at::Tensor& meas, bool keep) {
    const std::lock_guard<std::mutex> hold(lock_);
    ++counters_.built;
    if (!keep || !TensorKey::keyable(k0)) return;
    if (entries_.size() == kEntries) entries_.pop_back();
    entries_.push_front(Entry{TensorKey::of(k0), plan.idx, meas});
  }

  MeasurementCounters counters() {
    const std::lock_guard<std::mutex> hold(lock_);
    return counters_;
  }

  void reset() {
    const std::lock_guard<std::mutex> hold(lock_);
    entries_.clear();
    counters_ = MeasurementCounters{};
  }

 private:
  static constexpr size_t kEntries = 4;
  struct Entry {
    TensorKey key;
    at::Tensor idx, meas;
  };
  std::mutex lock_;
  std::deque<Entry> entries_;
  MeasurementCounters counters_;
};

inline ColumnPlan column_plan(const at::Tensor& mask, const Geometry& g) {
  return ColumnPlanCache::instance().get(mask, g);
}

}  // namespace mfft
}  // namespace fastfn
