// Torch-free CUDA kernels of mmseg-arb (see arb_kernels.cuh).
#include <type_traits>

#include "arb_kernel_logic.cuh"
#include "arb_kernels.cuh"

namespace mmseg_arb {
namespace {

constexpr int kThreads = logic::kCountThreads;
using logic::kWarp;

// The CUDA side of logic::count_block's Block.
struct DeviceBlock {
  __device__ int thread() const { return threadIdx.x; }
  __device__ int threads() const { return blockDim.x; }
  __device__ int lane() const { return threadIdx.x % kWarp; }
  __device__ int64_t global_thread() const {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  }
  __device__ int64_t grid_threads() const {
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
  }
  __device__ void sync() const { __syncthreads(); }
  // Lanes converged here that carry the same value.
  __device__ unsigned int match_any(int value) const {
    return __match_any_sync(__activemask(), value);
  }
  template <typename C>
  __device__ void atomic_add(C* address, C value) const {
    atomicAdd(address, value);
  }
  __device__ void atomic_max(unsigned long long* address,
                             unsigned long long value) const {
    atomicMax(address, value);
  }
};

template <typename T, bool kShared>
__global__ void __launch_bounds__(kThreads)
    count_classes_kernel(const T* __restrict__ labels, int64_t n,
                         int num_classes, long long ignore_index,
                         int replicas, unsigned long long* __restrict__ out) {
  extern __shared__ unsigned int shared_hist[];
  DeviceBlock block;
  logic::count_block<kShared>(block, labels, n, num_classes, ignore_index,
                              replicas, shared_hist, out);
}

template <typename T>
cudaError_t count_classes_typed(const T* labels, int64_t n, int num_classes,
                                int64_t ignore_index, unsigned long long* out,
                                int num_sms, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const logic::CountPlan plan =
      logic::plan_count(n, sizeof(T), num_classes, num_sms);
  const auto grid = static_cast<unsigned int>(plan.blocks);
  if (plan.replicas > 0) {
    count_classes_kernel<T, true>
        <<<grid, kThreads, static_cast<size_t>(plan.shared_bytes), stream>>>(
            labels, n, num_classes, ignore_index, plan.replicas, out);
  } else {  // too many classes for shared memory: global atomics
    count_classes_kernel<T, false><<<grid, kThreads, 0, stream>>>(
        labels, n, num_classes, ignore_index, 0, out);
  }
  return cudaGetLastError();
}

__global__ void update_counts_kernel(double* __restrict__ counts,
                                     const long long* __restrict__ batch,
                                     int num_classes, CountMode mode,
                                     double momentum) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= num_classes) return;
  const double b = static_cast<double>(batch[c]);
  if (mode == CountMode::kBatch) {
    counts[c] = b;
  } else if (mode == CountMode::kCumulative) {
    counts[c] += b;
  } else {
    counts[c] = (1.0 - momentum) * counts[c] + momentum * b;
  }
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
    int t;
    const bool valid = logic::valid_target(labels, p, C, ignore_index, &t);
    const logic::PixelLoss out = logic::pixel_forward(
        logits + n * C * S + (p - n * S), S, C, shift, class_weight, valid,
        t);
    loss[p] = out.loss;
    lse[p] = out.lse;
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
    int t;
    const bool valid = logic::valid_target(labels, p, C, ignore_index, &t);
    logic::pixel_backward(logits + offset, S, C, shift, class_weight, lse[p],
                          grad_loss[p], valid, t, grad + offset);
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

cudaError_t launch_update_counts(double* counts, const long long* batch,
                                 int num_classes, CountMode mode,
                                 double momentum, cudaStream_t stream) {
  const int blocks = (num_classes + kThreads - 1) / kThreads;
  update_counts_kernel<<<blocks, kThreads, 0, stream>>>(
      counts, batch, num_classes, mode, momentum);
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
