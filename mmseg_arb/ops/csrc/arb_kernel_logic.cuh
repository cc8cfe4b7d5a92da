// What the mmseg-arb kernels compute, as __host__ __device__ functions: the
// count kernel's launch plan and one block of it (written against a Block
// that supplies __syncthreads, __match_any_sync and the atomics), which
// labels a thread reads, a class's running count and shift, and the fused
// loss of a thread's pixels, forward and backward. The kernels in arb_kernels.cu are thin wrappers around these.
// tests/test_ops/csrc/ runs the same functions on the host, the block with
// emulated threads under ThreadSanitizer, against exact references, so this
// logic is tested wherever nvcc exists, GPU or not. Torch-free, like
// arb_kernels.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cassert>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "arb_kernels.cuh"  // CountMode

#define ARB_HD __host__ __device__ __forceinline__

namespace mmseg_arb {
namespace logic {

ARB_HD float to_float(float v) { return v; }
ARB_HD float to_float(__half v) { return __half2float(v); }
ARB_HD float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename F>
ARB_HD F from_float(float v);
template <>
ARB_HD float from_float<float>(float v) { return v; }
template <>
ARB_HD __half from_float<__half>(float v) { return __float2half(v); }
template <>
ARB_HD __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// A read-only global load: through the non-coherent cache on the device.
template <typename T>
ARB_HD T load_readonly(const T* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

// -1: ignored, num_classes: out of range, else the class.
template <typename T>
ARB_HD int bin_of(T raw, int num_classes, long long ignore_index) {
  const long long v = static_cast<long long>(raw);
  if (v == ignore_index) return -1;
  return (v >= 0 && v < num_classes) ? static_cast<int>(v) : num_classes;
}

// Calls visit(labels[i]) for each i in [0, n) owned by thread `tid` of
// `num_threads`: a scalar head up to the first 16-byte boundary, then
// 16-byte vector loads, then a scalar tail. Each i is owned by exactly one
// thread, whatever the alignment of `labels`.
#pragma nv_exec_check_disable
template <typename T, typename Visit>
ARB_HD void for_each_owned_label(const T* labels, int64_t n, int64_t tid,
                                 int64_t num_threads, Visit&& visit) {
  constexpr int kVec = 16 / sizeof(T);
  const uintptr_t address = reinterpret_cast<uintptr_t>(labels);
  int64_t head = static_cast<int64_t>((16 - address % 16) % 16) /
                 static_cast<int64_t>(sizeof(T));
  if (head > n) head = n;
  for (int64_t i = tid; i < head; i += num_threads) visit(labels[i]);
  const int64_t num_vec = (n - head) / kVec;
  const uint4* vec = reinterpret_cast<const uint4*>(labels + head);
  for (int64_t i = tid; i < num_vec; i += num_threads) {
    const uint4 packed = load_readonly(vec + i);
    T items[kVec];  // memcpy, not a pointer cast: no aliasing violation
    memcpy(items, &packed, sizeof(packed));
#pragma unroll
    for (int k = 0; k < kVec; ++k) visit(items[k]);
  }
  for (int64_t i = head + num_vec * kVec + tid; i < n; i += num_threads) {
    visit(labels[i]);
  }
}

// Launch shape of the count kernel: a grid of at most 4 blocks per SM, each
// with `replicas` private shared-memory histograms of num_classes + 1 32-bit
// counters, or none (replicas == 0: global atomics) when one does not fit.
constexpr int kCountThreads = 256;
constexpr int kWarp = 32;
// Static shared memory every CUDA device offers without opting in.
constexpr int64_t kSharedBudget = 48 * 1024;
// A block never reads more labels than a 32-bit shared counter can count.
constexpr int64_t kMaxLabelsPerBlock = int64_t(1) << 31;

struct CountPlan {
  int64_t blocks;
  int replicas;
  int64_t shared_bytes;
};

inline CountPlan plan_count(int64_t n, int label_bytes, int num_classes,
                            int num_sms) {
  const int64_t per_block = int64_t(kCountThreads) * (16 / label_bytes);
  const int64_t wanted = (n + per_block - 1) / per_block;
  const int64_t cap = int64_t(num_sms > 0 ? num_sms : 1) * 4;
  const int64_t needed = (n + kMaxLabelsPerBlock - 1) / kMaxLabelsPerBlock;
  int64_t blocks = wanted < cap ? wanted : cap;
  if (blocks < needed) blocks = needed;
  if (blocks < 1) blocks = 1;
  const int64_t hist_bytes = int64_t(num_classes + 1) * 4;
  int64_t replicas = kSharedBudget / hist_bytes;
  if (replicas > kCountThreads / kWarp) replicas = kCountThreads / kWarp;
  return CountPlan{blocks, static_cast<int>(replicas),
                   replicas * hist_bytes};
}

ARB_HD int first_lane(unsigned int mask) {
#ifdef __CUDA_ARCH__
  return __ffs(mask) - 1;
#else
  return __builtin_ffs(mask) - 1;
#endif
}

ARB_HD unsigned int lanes_in(unsigned int mask) {
#ifdef __CUDA_ARCH__
  return __popc(mask);
#else
  return __builtin_popcount(mask);
#endif
}

// Adds one label to the histogram. The lanes of a warp that hit the same
// bin (a dominant class such as "road") are merged first, so one atomic per
// distinct bin and warp reaches this thread's shared replica (kShared) or,
// beyond shared memory, the global counters.
constexpr unsigned long long kInt64Max = 0x7fffffffffffffffull;

template <bool kShared, typename T, typename Block>
struct AddLabel {
  const Block& block;
  int num_classes;
  long long ignore_index;
  unsigned int* hist;  // this thread's shared replica
  unsigned long long* out;

  // A bad label's extremes, straight to the global entries after the bins:
  // out[C + 1] = the largest above the range, out[C + 2] = minus the
  // smallest below zero (both start at 0). Bad labels are rare; each lane
  // that meets one pays a global atomic.
#pragma nv_exec_check_disable
  ARB_HD void note_bad_label(long long v) const {
    if (v >= num_classes) {
      block.atomic_max(out + num_classes + 1,
                       static_cast<unsigned long long>(v));
    } else {  // v < 0. -INT64_MIN is not an int64: it reads as -INT64_MAX,
              // so that the entry stays a non-negative int64 (the running
              // totals take signed maxima).
      const unsigned long long negated =
          0ull - static_cast<unsigned long long>(v);
      block.atomic_max(out + num_classes + 2,
                       negated < kInt64Max ? negated : kInt64Max);
    }
  }

#pragma nv_exec_check_disable
  ARB_HD void operator()(T raw) const {
    const int bin = bin_of(raw, num_classes, ignore_index);
    if (bin == num_classes) note_bad_label(static_cast<long long>(raw));
    const unsigned int peers = block.match_any(bin);
    if (bin < 0 || block.lane() != first_lane(peers)) return;
    if (kShared) {
      block.atomic_add(hist + bin, lanes_in(peers));
    } else {
      block.atomic_add(out + bin,
                       static_cast<unsigned long long>(lanes_in(peers)));
    }
  }
};

// One block of the count kernel: out[c] += labels of class c, out[C] +=
// bad labels (neither a class nor ignored) and out[C + 1], out[C + 2] their
// extremes (see AddLabel), ignored labels skipped. With shared histograms each
// warp group adds into its own replica, then one global atomic per bin per
// block. `Block` supplies thread(), threads(), lane(), global_thread(),
// grid_threads(), sync(), match_any(int), atomic_add(p, v) and
// atomic_max(p, v): the CUDA built-ins in the kernel, emulated threads in
// the host test.
#pragma nv_exec_check_disable
template <bool kShared, typename T, typename Block>
ARB_HD void count_block(const Block& block, const T* labels, int64_t n,
                        int num_classes, long long ignore_index,
                        int replicas, unsigned int* shared_hist,
                        unsigned long long* out) {
  const int bins = num_classes + 1;
  unsigned int* hist = shared_hist;
  if (kShared) {
    for (int i = block.thread(); i < replicas * bins; i += block.threads()) {
      shared_hist[i] = 0u;
    }
    block.sync();
    hist = shared_hist + (block.thread() / kWarp % replicas) * bins;
  }
  for_each_owned_label(
      labels, n, block.global_thread(), block.grid_threads(),
      AddLabel<kShared, T, Block>{block, num_classes, ignore_index, hist, out});
  if (kShared) {
    block.sync();
    for (int b = block.thread(); b < bins; b += block.threads()) {
      unsigned long long total = 0;
      for (int r = 0; r < replicas; ++r) total += shared_hist[r * bins + b];
      if (total) block.atomic_add(out + b, total);
    }
  }
}

// ---------------------------------------------------------------- counts

// The log-count of an absent class (ABSENT_CLASS_SHIFT, counting/prepare.py).
constexpr float kAbsentShift = -1e30f;

// A class's new running count after a training step's count `batch`.
ARB_HD double updated_count(CountMode mode, double count, double batch,
                            double momentum) {
  if (mode == CountMode::kBatch) return batch;
  if (mode == CountMode::kCumulative) return count + batch;
  if (mode == CountMode::kEma) return (1.0 - momentum) * count + momentum * batch;
  return count;  // kPrior: fixed
}

// tau * log(n + smoothing) as float, kAbsentShift where that count is 0;
// 0 for every class at tau = 0 (cross-entropy).
ARB_HD float log_count_shift(double count, double smoothing, double tau) {
  if (tau == 0.0) return 0.f;
  const double n = count + smoothing;
  return n > 0.0 ? static_cast<float>(tau * log(n)) : kAbsentShift;
}

// Count-driven class weights (count_class_weight, counting/prepare.py): a
// class weighs (n / largest)^-p capped at max_weight_ratio, so that
// w_max / w_min <= max_weight_ratio for any power and count (0^-p = inf
// becomes the cap); `largest` is the largest n. The caller normalises.
ARB_HD double raw_weight(double n, double largest, double weight_power,
                         double max_weight_ratio) {
  const double w = pow(n / largest, -weight_power);
  return w < max_weight_ratio ? w : max_weight_ratio;
}

// ------------------------------------------------------------ fused loss

constexpr float kLog2e = 1.4426950408889634f;
// Classes whose logits a thread loads at once, V pixels each: 64 bytes of
// independent loads in flight per thread for fp32 (V = 4), 32 for 16-bit
// types (V = 8), where twice the registers would halve the occupancy.
template <int V>
constexpr int kClassChunkOf = V >= 8 ? 2 : 4;

// e^x for x <= 0 as 2^(x log2 e): on the device one MUFU.EX2 (2 ulp). The
// argument is a difference of shifted logits, formed before the scaling,
// so the scaling adds a relative error of the difference, not of the
// logits (which would make the loss's error absolute, ~|logit| * 2^-23).
ARB_HD float exp_of_difference(float x) { return exp2f(x * kLog2e); }

// The unsigned type of `kBytes` bytes, the width of one vector access.
template <int kBytes>
struct VectorOf;
template <>
struct VectorOf<16> { using type = uint4; };
template <>
struct VectorOf<8> { using type = uint2; };
template <>
struct VectorOf<4> { using type = unsigned int; };
template <>
struct VectorOf<2> { using type = unsigned short; };

// V consecutive values at p as floats, in one vector load (p must be
// aligned to V * sizeof(F) bytes). memcpy, not a pointer cast: no aliasing
// violation, and nvcc turns it into register moves.
template <int V, typename F>
ARB_HD void load_floats(const F* p, float (&out)[V]) {
  using Vec = typename VectorOf<V * sizeof(F)>::type;
#ifndef __CUDA_ARCH__  // the host tests: a GPU would fault on it
  assert(reinterpret_cast<uintptr_t>(p) % sizeof(Vec) == 0);
#endif
  const Vec packed = load_readonly(reinterpret_cast<const Vec*>(p));
  F items[V];
  memcpy(items, &packed, sizeof(packed));
#pragma unroll
  for (int v = 0; v < V; ++v) out[v] = to_float(items[v]);
}

template <int V, typename F>
ARB_HD void store_floats(F* p, const float (&values)[V]) {
  using Vec = typename VectorOf<V * sizeof(F)>::type;
#ifndef __CUDA_ARCH__
  assert(reinterpret_cast<uintptr_t>(p) % sizeof(Vec) == 0);
#endif
  F items[V];
#pragma unroll
  for (int v = 0; v < V; ++v) items[v] = from_float<F>(values[v]);
  Vec packed;
  memcpy(&packed, items, sizeof(packed));
  *reinterpret_cast<Vec*>(p) = packed;
}

// The label of pixel p if it is a class in [0, C) and not ignored.
template <typename L>
ARB_HD bool valid_target(const L* labels, int64_t p, int C,
                         long long ignore_index, int* target) {
  const long long t = static_cast<long long>(labels[p]);
  *target = t >= 0 && t < C ? static_cast<int>(t) : 0;
  return t != ignore_index && t >= 0 && t < C;
}

// A pixel's softmax over its shifted logits x_c = z_c + shift_c (rounded
// to float32 as PyTorch rounds z + shift): the largest x, and the log of
// sum_c e^(x_c - max) (>= 0: the largest term is e^0 = 1). The loss of
// target t is (max - x_t) + log_sum, two non-negative terms: never below
// zero, and exact where it is small. Saved for the backward, which needs
// both parts to form x_c - max - log_sum without rounding at |logit| scale.
struct SoftmaxStats {
  float max;
  float log_sum;
};

ARB_HD float pixel_loss(const SoftmaxStats& stats, float shifted_target) {
  return (stats.max - shifted_target) + stats.log_sum;
}

// Forward of V consecutive pixels whose logits of class c start at
// z + c * stride (stride = the spatial size S): one read of the logits,
// kClassChunk vector loads in flight, an online log-sum-exp. Gives each
// pixel's softmax statistics and its shifted target logit
// x_t = z_t + shift_t, t = target[v] (picked up on the way).
template <int V, typename F>
ARB_HD void forward_pixels(const F* z, int64_t stride, int C,
                           const float* shift, const int (&target)[V],
                           SoftmaxStats (&stats)[V],
                           float (&shifted_target)[V]) {
  constexpr int kClassChunk = kClassChunkOf<V>;
  float m[V], sum[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    // Not -inf: a chunk of -inf logits must add e^-inf = 0, not
    // e^(-inf - -inf) = NaN.
    m[v] = -FLT_MAX;
    sum[v] = 0.f;
    shifted_target[v] = 0.f;
  }
  int c = 0;
  for (; c + kClassChunk <= C; c += kClassChunk) {
    float x[kClassChunk][V];
#pragma unroll
    for (int k = 0; k < kClassChunk; ++k) {
      load_floats<V>(z + (c + k) * stride, x[k]);
    }
#pragma unroll
    for (int k = 0; k < kClassChunk; ++k) {
      const float s = load_readonly(shift + c + k);
#pragma unroll
      for (int v = 0; v < V; ++v) {
        x[k][v] += s;
        if (c + k == target[v]) shifted_target[v] = x[k][v];
      }
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
      float chunk_max = x[0][v];
#pragma unroll
      for (int k = 1; k < kClassChunk; ++k) {
        chunk_max = fmaxf(chunk_max, x[k][v]);
      }
      if (chunk_max > m[v]) {
        sum[v] *= exp_of_difference(m[v] - chunk_max);
        m[v] = chunk_max;
      }
#pragma unroll
      for (int k = 0; k < kClassChunk; ++k) {
        sum[v] += exp_of_difference(x[k][v] - m[v]);
      }
    }
  }
  for (; c < C; ++c) {
    float x[V];
    load_floats<V>(z + c * stride, x);
    const float s = load_readonly(shift + c);
#pragma unroll
    for (int v = 0; v < V; ++v) {
      x[v] += s;
      if (c == target[v]) shifted_target[v] = x[v];
      if (x[v] > m[v]) {
        sum[v] = sum[v] * exp_of_difference(m[v] - x[v]) + 1.f;
        m[v] = x[v];
      } else {
        sum[v] += exp_of_difference(x[v] - m[v]);
      }
    }
  }
#pragma unroll
  for (int v = 0; v < V; ++v) stats[v] = SoftmaxStats{m[v], logf(sum[v])};
}

// Backward of V consecutive pixels: grad_c = (softmax_c - [c == target]) * g
// with softmax_c = e^((x_c - max) - log_sum), g per pixel (0 where the
// pixel gets no loss; when all V are 0 the logits are not read). One read
// of the logits, one write of the gradient, both vectorised.
template <int V, typename F>
ARB_HD void backward_pixels(const F* z, int64_t stride, int C,
                            const float* shift, const int (&target)[V],
                            const SoftmaxStats (&stats)[V],
                            const float (&g)[V], F* grad) {
  constexpr int kClassChunk = kClassChunkOf<V>;
  bool any = false;
#pragma unroll
  for (int v = 0; v < V; ++v) any = any || g[v] != 0.f;
  if (!any) {
    const float zero[V] = {};
    for (int c = 0; c < C; ++c) store_floats<V>(grad + c * stride, zero);
    return;
  }
  int c = 0;
  for (; c + kClassChunk <= C; c += kClassChunk) {
    float x[kClassChunk][V];
#pragma unroll
    for (int k = 0; k < kClassChunk; ++k) {
      load_floats<V>(z + (c + k) * stride, x[k]);
    }
#pragma unroll
    for (int k = 0; k < kClassChunk; ++k) {
      const float s = load_readonly(shift + c + k);
      float out[V];
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const float prob = exp_of_difference(
            (x[k][v] + s - stats[v].max) - stats[v].log_sum);
        out[v] = (prob - (c + k == target[v] ? 1.f : 0.f)) * g[v];
      }
      store_floats<V>(grad + (c + k) * stride, out);
    }
  }
  for (; c < C; ++c) {
    float x[V], out[V];
    load_floats<V>(z + c * stride, x);
    const float s = load_readonly(shift + c);
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const float prob = exp_of_difference((x[v] + s - stats[v].max) -
                                           stats[v].log_sum);
      out[v] = (prob - (c == target[v] ? 1.f : 0.f)) * g[v];
    }
    store_floats<V>(grad + c * stride, out);
  }
}

// What one pixel adds to the reduced loss: its weighted loss, and its part
// of mmseg's mean denominator (its class weight if labelled; an ignored
// pixel counts 1, or 0 with avg_non_ignore).
struct PixelTerms {
  float loss;
  float denominator;
};

ARB_HD PixelTerms pixel_terms(bool valid, float loss, float class_weight,
                              float pixel_weight, bool avg_non_ignore) {
  if (!valid) return PixelTerms{0.f, avg_non_ignore ? 0.f : 1.f};
  return PixelTerms{loss * class_weight * pixel_weight, class_weight};
}

}  // namespace logic
}  // namespace mmseg_arb
