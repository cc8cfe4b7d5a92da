// Torch-free CUDA kernels of mmseg-arb (see arb_kernels.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <type_traits>

#include "arb_kernels.cuh"

namespace mmseg_arb {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
// Static shared memory every CUDA device offers without opting in.
constexpr int kSharedBudget = 48 * 1024;
// Classes whose logits the fused loss loads at once.
constexpr int kLseChunk = 8;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename F>
__device__ __forceinline__ F from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// -1: ignored, num_classes: out of range, else the class.
template <typename T>
__device__ __forceinline__ int bin_of(T raw, int num_classes,
                                      long long ignore_index) {
  const long long v = static_cast<long long>(raw);
  if (v == ignore_index) return -1;
  return (v >= 0 && v < num_classes) ? static_cast<int>(v) : num_classes;
}

// Adds one pixel to a shared histogram. Lanes of a warp that hit the same
// bin (a dominant class such as "road") are merged first, so one atomic
// per distinct bin and warp reaches shared memory.
__device__ __forceinline__ void add_shared(unsigned int* hist, int bin) {
  const unsigned int peers = __match_any_sync(__activemask(), bin);
  const int leader = __ffs(peers) - 1;
  if (bin >= 0 && (threadIdx.x % kWarp) == leader) {
    atomicAdd(hist + bin, static_cast<unsigned int>(__popc(peers)));
  }
}

template <typename T, bool kShared>
__global__ void __launch_bounds__(kThreads)
    count_classes_kernel(const T* __restrict__ labels, int64_t n,
                         int num_classes, long long ignore_index,
                         int replicas, unsigned long long* __restrict__ out) {
  extern __shared__ unsigned int shared_hist[];
  const int bins = num_classes + 1;
  unsigned int* hist = shared_hist;
  if (kShared) {
    for (int i = threadIdx.x; i < replicas * bins; i += blockDim.x) {
      shared_hist[i] = 0u;
    }
    __syncthreads();
    // One private copy per group of warps spreads atomic traffic.
    hist = shared_hist + (threadIdx.x / kWarp % replicas) * bins;
  }
  auto add = [&](T raw) {
    const int bin = bin_of(raw, num_classes, ignore_index);
    if (kShared) {
      add_shared(hist, bin);
    } else if (bin >= 0) {
      atomicAdd(out + bin, 1ull);
    }
  };

  // 16-byte loads: a scalar head up to alignment, the vector body, a tail.
  constexpr int kVec = 16 / sizeof(T);
  const uintptr_t address = reinterpret_cast<uintptr_t>(labels);
  int64_t head = static_cast<int64_t>((16 - address % 16) % 16) / sizeof(T);
  if (head > n) head = n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x +
                      threadIdx.x;
  if (tid < head) add(labels[tid]);
  const int64_t num_vec = (n - head) / kVec;
  const uint4* vec = reinterpret_cast<const uint4*>(labels + head);
  for (int64_t i = tid; i < num_vec; i += stride) {
    const uint4 packed = __ldg(vec + i);
    const T* items = reinterpret_cast<const T*>(&packed);
#pragma unroll
    for (int k = 0; k < kVec; ++k) add(items[k]);
  }
  for (int64_t i = head + num_vec * kVec + tid; i < n; i += stride) {
    add(labels[i]);
  }

  if (kShared) {
    __syncthreads();
    for (int b = threadIdx.x; b < bins; b += blockDim.x) {
      unsigned long long total = 0;
      for (int r = 0; r < replicas; ++r) total += shared_hist[r * bins + b];
      if (total) atomicAdd(out + b, total);  // one global atomic per bin
    }
  }
}

template <typename T>
cudaError_t count_classes_typed(const T* labels, int64_t n, int num_classes,
                                int64_t ignore_index, unsigned long long* out,
                                int num_sms, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int bins = num_classes + 1;
  const int64_t per_block = static_cast<int64_t>(kThreads) * (16 / sizeof(T));
  int64_t blocks = (n + per_block - 1) / per_block;
  const int64_t max_blocks = static_cast<int64_t>(num_sms > 0 ? num_sms : 1) * 4;
  if (blocks > max_blocks) blocks = max_blocks;
  const size_t hist_bytes = static_cast<size_t>(bins) * sizeof(unsigned int);
  if (hist_bytes <= static_cast<size_t>(kSharedBudget)) {
    int replicas = static_cast<int>(kSharedBudget / hist_bytes);
    if (replicas > kThreads / kWarp) replicas = kThreads / kWarp;
    count_classes_kernel<T, true>
        <<<static_cast<unsigned int>(blocks), kThreads, replicas * hist_bytes,
           stream>>>(labels, n, num_classes, ignore_index, replicas, out);
  } else {  // too many classes for shared memory: global atomics
    count_classes_kernel<T, false>
        <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
            labels, n, num_classes, ignore_index, 1, out);
  }
  return cudaGetLastError();
}

__global__ void update_counts_kernel(double* __restrict__ state,
                                     const long long* __restrict__ batch,
                                     int num_classes, int mode,
                                     double momentum) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= num_classes) return;
  const double b = static_cast<double>(batch[c]);
  if (mode == static_cast<int>(CountUpdate::kReplace)) {
    state[c] = b;
  } else if (mode == static_cast<int>(CountUpdate::kAccumulate)) {
    state[c] += b;
  } else {
    state[c] = (1.0 - momentum) * state[c] + momentum * b;
  }
}

template <typename L>
__device__ __forceinline__ bool valid_target(const L* labels, int64_t p,
                                             int C, long long ignore_index,
                                             int* target) {
  const long long t = static_cast<long long>(labels[p]);
  *target = static_cast<int>(t);
  return t != ignore_index && t >= 0 && t < C;
}

template <typename F, typename L>
__global__ void __launch_bounds__(kThreads)
    arb_loss_forward_kernel(const F* __restrict__ logits,
                            const L* __restrict__ labels,
                            const float* __restrict__ shift,
                            const float* __restrict__ class_weight, int64_t N,
                            int C, int64_t S, long long ignore_index,
                            float* __restrict__ loss, float* __restrict__ lse) {
  const int64_t total = N * S;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x +
                   threadIdx.x;
       p < total; p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = p / S;
    const F* z = logits + n * C * S + (p - n * S);
    // Online log-sum-exp over chunks of classes: one pass over the logits,
    // one exp per logit, and a chunk's loads issued together (they are
    // strided by S, so each is its own memory transaction).
    float m = -INFINITY, sum = 0.f;
    int c = 0;
    for (; c + kLseChunk <= C; c += kLseChunk) {
      float v[kLseChunk];
#pragma unroll
      for (int k = 0; k < kLseChunk; ++k) {
        v[k] = to_float(z[(c + k) * S]) + __ldg(shift + c + k);
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
      const float v = to_float(z[c * S]) + __ldg(shift + c);
      if (v > m) {
        sum = sum * expf(m - v) + 1.f;
        m = v;
      } else {
        sum += expf(v - m);
      }
    }
    const float l = m + logf(sum);
    lse[p] = l;
    int t;
    float out = 0.f;
    if (valid_target(labels, p, C, ignore_index, &t)) {
      out = l - (to_float(z[t * S]) + __ldg(shift + t));
      if (class_weight != nullptr) out *= __ldg(class_weight + t);
    }
    loss[p] = out;
  }
}

template <typename F, typename L>
__global__ void __launch_bounds__(kThreads)
    arb_loss_backward_kernel(const F* __restrict__ logits,
                             const L* __restrict__ labels,
                             const float* __restrict__ shift,
                             const float* __restrict__ class_weight,
                             const float* __restrict__ lse,
                             const float* __restrict__ grad_loss, int64_t N,
                             int C, int64_t S, long long ignore_index,
                             F* __restrict__ grad) {
  const int64_t total = N * S;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x +
                   threadIdx.x;
       p < total; p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = p / S;
    const int64_t offset = n * C * S + (p - n * S);
    F* g_out = grad + offset;
    int t;
    float g = 0.f;
    if (valid_target(labels, p, C, ignore_index, &t)) {
      g = grad_loss[p];
      if (class_weight != nullptr) g *= __ldg(class_weight + t);
    }
    if (g == 0.f) {  // ignored pixel: no need to read its logits
      for (int c = 0; c < C; ++c) g_out[c * S] = from_float<F>(0.f);
      continue;
    }
    const F* z = logits + offset;
    const float l = lse[p];
    auto grad_of = [&](int c, float v) {
      const float prob = expf(v + __ldg(shift + c) - l);
      return from_float<F>((prob - (c == t ? 1.f : 0.f)) * g);
    };
    int c = 0;
    for (; c + kLseChunk <= C; c += kLseChunk) {  // loads first, as forward
      float v[kLseChunk];
#pragma unroll
      for (int k = 0; k < kLseChunk; ++k) v[k] = to_float(z[(c + k) * S]);
#pragma unroll
      for (int k = 0; k < kLseChunk; ++k) {
        g_out[(c + k) * S] = grad_of(c + k, v[k]);
      }
    }
    for (; c < C; ++c) g_out[c * S] = grad_of(c, to_float(z[c * S]));
  }
}

unsigned int grid_for(int64_t total) {
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks < 1) blocks = 1;
  if (blocks > 0x7fffffff) blocks = 0x7fffffff;
  return static_cast<unsigned int>(blocks);
}

// Calls `fn` with typed null pointers selecting the logits and label types.
template <typename Fn>
cudaError_t dispatch(FloatType ftype, LabelType ltype, Fn&& fn) {
  auto with_label = [&](auto float_tag) -> cudaError_t {
    switch (ltype) {
      case LabelType::kInt64:
        return fn(float_tag, static_cast<const int64_t*>(nullptr));
      case LabelType::kInt32:
        return fn(float_tag, static_cast<const int32_t*>(nullptr));
      case LabelType::kUInt8:
        return fn(float_tag, static_cast<const uint8_t*>(nullptr));
    }
    return cudaErrorInvalidValue;
  };
  switch (ftype) {
    case FloatType::kFloat32:
      return with_label(static_cast<const float*>(nullptr));
    case FloatType::kFloat16:
      return with_label(static_cast<const __half*>(nullptr));
    case FloatType::kBFloat16:
      return with_label(static_cast<const __nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_count_classes(const void* labels, LabelType type,
                                 int64_t n, int num_classes,
                                 int64_t ignore_index,
                                 unsigned long long* out, int num_sms,
                                 cudaStream_t stream) {
  switch (type) {
    case LabelType::kInt64:
      return count_classes_typed(static_cast<const int64_t*>(labels), n,
                                 num_classes, ignore_index, out, num_sms,
                                 stream);
    case LabelType::kInt32:
      return count_classes_typed(static_cast<const int32_t*>(labels), n,
                                 num_classes, ignore_index, out, num_sms,
                                 stream);
    case LabelType::kUInt8:
      return count_classes_typed(static_cast<const uint8_t*>(labels), n,
                                 num_classes, ignore_index, out, num_sms,
                                 stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_update_counts(double* state, const long long* batch,
                                 int num_classes, CountUpdate mode,
                                 double momentum, cudaStream_t stream) {
  const int blocks = (num_classes + kThreads - 1) / kThreads;
  update_counts_kernel<<<blocks, kThreads, 0, stream>>>(
      state, batch, num_classes, static_cast<int>(mode), momentum);
  return cudaGetLastError();
}

cudaError_t launch_arb_loss_forward(const void* logits, FloatType ftype,
                                    const void* labels, LabelType ltype,
                                    const float* shift,
                                    const float* class_weight, int64_t N,
                                    int C, int64_t S, int64_t ignore_index,
                                    float* loss, float* lse,
                                    cudaStream_t stream) {
  return dispatch(ftype, ltype, [&](auto f_tag, auto l_tag) {
    using F = std::remove_const_t<std::remove_pointer_t<decltype(f_tag)>>;
    using L = std::remove_const_t<std::remove_pointer_t<decltype(l_tag)>>;
    arb_loss_forward_kernel<F, L><<<grid_for(N * S), kThreads, 0, stream>>>(
        static_cast<const F*>(logits), static_cast<const L*>(labels), shift,
        class_weight, N, C, S, ignore_index, loss, lse);
    return cudaGetLastError();
  });
}

cudaError_t launch_arb_loss_backward(const void* logits, FloatType ftype,
                                     const void* labels, LabelType ltype,
                                     const float* shift,
                                     const float* class_weight,
                                     const float* lse, const float* grad_loss,
                                     int64_t N, int C, int64_t S,
                                     int64_t ignore_index, void* grad_logits,
                                     cudaStream_t stream) {
  return dispatch(ftype, ltype, [&](auto f_tag, auto l_tag) {
    using F = std::remove_const_t<std::remove_pointer_t<decltype(f_tag)>>;
    using L = std::remove_const_t<std::remove_pointer_t<decltype(l_tag)>>;
    arb_loss_backward_kernel<F, L><<<grid_for(N * S), kThreads, 0, stream>>>(
        static_cast<const F*>(logits), static_cast<const L*>(labels), shift,
        class_weight, lse, grad_loss, N, C, S, ignore_index,
        static_cast<F*>(grad_logits));
    return cudaGetLastError();
  });
}

}  // namespace mmseg_arb
