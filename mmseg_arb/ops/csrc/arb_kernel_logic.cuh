// What the mmseg-arb kernels compute, as __host__ __device__ functions: the
// count kernel's launch plan and one block of it (written against a Block
// that supplies __syncthreads, __match_any_sync and the atomics), which
// labels a thread reads, and the fused loss of one pixel, forward and
// backward. The kernels in arb_kernels.cu are thin wrappers around these.
// tests/test_ops/csrc/ runs the same functions on the host, the block with
// emulated threads under ThreadSanitizer, against exact references, so this
// logic is tested wherever nvcc exists, GPU or not. Torch-free, like
// arb_kernels.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#define ARB_HD __host__ __device__ __forceinline__

namespace mmseg_arb {
namespace logic {

// Classes whose logits the fused loss loads at once (independent strided
// loads in flight per thread).
constexpr int kLseChunk = 8;

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
    } else {  // v < 0; the unsigned negation is exact even for INT64_MIN
      block.atomic_max(out + num_classes + 2,
                       0ull - static_cast<unsigned long long>(v));
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

// The label of pixel p if it is a class in [0, C) and not ignored.
template <typename L>
ARB_HD bool valid_target(const L* labels, int64_t p, int C,
                         long long ignore_index, int* target) {
  const long long t = static_cast<long long>(labels[p]);
  *target = static_cast<int>(t);
  return t != ignore_index && t >= 0 && t < C;
}

struct PixelLoss {
  float loss;  // (lse - z_y - shift_y) * weight_y, 0 if y is not valid
  float lse;   // log sum_c exp(z_c + shift_c)
};

// Forward of one pixel whose C logits lie `stride` elements apart from z.
// One pass over the logits (online log-sum-exp over chunks of kLseChunk),
// one exp per logit.
template <typename F>
ARB_HD PixelLoss pixel_forward(const F* z, int64_t stride, int C,
                               const float* shift, const float* class_weight,
                               bool valid, int target) {
  float m = -INFINITY, sum = 0.f;
  int c = 0;
  for (; c + kLseChunk <= C; c += kLseChunk) {
    float v[kLseChunk];
#pragma unroll
    for (int k = 0; k < kLseChunk; ++k) {
      v[k] = to_float(z[(c + k) * stride]) + load_readonly(shift + c + k);
    }
    float chunk_max = v[0];
#pragma unroll
    for (int k = 1; k < kLseChunk; ++k) chunk_max = fmaxf(chunk_max, v[k]);
    if (chunk_max > m) {
      sum *= expf(m - chunk_max);
      m = chunk_max;
    }
#pragma unroll
    for (int k = 0; k < kLseChunk; ++k) sum += expf(v[k] - m);
  }
  for (; c < C; ++c) {
    const float v = to_float(z[c * stride]) + load_readonly(shift + c);
    if (v > m) {
      sum = sum * expf(m - v) + 1.f;
      m = v;
    } else {
      sum += expf(v - m);
    }
  }
  PixelLoss out{0.f, m + logf(sum)};
  if (valid) {
    out.loss = out.lse -
               (to_float(z[target * stride]) + load_readonly(shift + target));
    if (class_weight != nullptr) {
      out.loss *= load_readonly(class_weight + target);
    }
  }
  return out;
}

// d loss / d z_c of a pixel: (softmax_c - [c == y]) * g.
template <typename F>
ARB_HD F logit_grad(float z_c, float shift_c, float lse, bool is_target,
                    float g) {
  const float prob = expf(z_c + shift_c - lse);
  return from_float<F>((prob - (is_target ? 1.f : 0.f)) * g);
}

// Backward of one pixel: grad_c = (exp(z_c + shift_c - lse) - [c == y]) * g
// with g = grad_loss * weight_y (0 if y is not valid: the logits are then
// not read). One read of the logits, one write of the gradient.
template <typename F>
ARB_HD void pixel_backward(const F* z, int64_t stride, int C,
                           const float* shift, const float* class_weight,
                           float lse, float grad_loss, bool valid, int target,
                           F* grad) {
  float g = 0.f;
  if (valid) {
    g = grad_loss;
    if (class_weight != nullptr) g *= load_readonly(class_weight + target);
  }
  if (g == 0.f) {
    for (int c = 0; c < C; ++c) grad[c * stride] = from_float<F>(0.f);
    return;
  }
  int c = 0;
  for (; c + kLseChunk <= C; c += kLseChunk) {  // loads first, as forward
    float v[kLseChunk];
#pragma unroll
    for (int k = 0; k < kLseChunk; ++k) v[k] = to_float(z[(c + k) * stride]);
#pragma unroll
    for (int k = 0; k < kLseChunk; ++k) {
      grad[(c + k) * stride] = logit_grad<F>(
          v[k], load_readonly(shift + c + k), lse, c + k == target, g);
    }
  }
  for (; c < C; ++c) {
    grad[c * stride] = logit_grad<F>(to_float(z[c * stride]),
                                     load_readonly(shift + c), lse,
                                     c == target, g);
  }
}

}  // namespace logic
}  // namespace mmseg_arb
