// Torch-free CUDA kernels of mmseg-arb (see arb_kernels.cuh).
//
// Every kernel launch and the one dynamic shared-memory array go through
// the two macros below, so that tests/test_ops/csrc/ can compile this very
// file on the host, with each CUDA thread a host thread (see the emulator
// there), and check every kernel at its real launch geometry without a GPU.
#include <cfloat>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "arb_kernel_logic.cuh"
#include "arb_kernels.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
// __match_any_sync and independent thread scheduling: setup.py and the JIT
// build leave these GPUs out, and the PyTorch path serves them.
#error "mmseg-arb's CUDA kernels need compute capability 7.0 (Volta) or newer"
#endif

#ifndef ARB_LAUNCH
#define ARB_LAUNCH(grid, threads, shared_bytes, stream, ...) \
  __VA_ARGS__<<<grid, threads, shared_bytes, stream>>>
#endif
#ifndef ARB_DYNAMIC_SHARED
#define ARB_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

namespace mmseg_arb {
namespace {

constexpr int kThreads = logic::kCountThreads;
// Resident blocks of 256 threads per SM the loss kernels are compiled for,
// by pixels per thread. An H100/H200 SM needs some 25 KB of loads in flight
// to cover DRAM latency at full bandwidth: fp32 (V = 4, 4 classes x 16 B a
// thread) gets 64 KB from 4 blocks at <= 64 registers; the 16-bit types
// (V = 8, 2 x 16 B) 24 KB from 3 blocks, the compiler kept at <= 85
// registers (unbounded it takes 92: 2 blocks, 16 KB).
template <int V>
constexpr int kLossBlocksPerSM = V >= 8 ? 3 : 4;
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
  ARB_DYNAMIC_SHARED(unsigned int, shared_hist);
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
    ARB_LAUNCH(grid, kThreads, static_cast<size_t>(plan.shared_bytes), stream,
               count_classes_kernel<T, true>)(labels, n, num_classes,
                                              ignore_index, plan.replicas,
                                              out);
  } else {  // too many classes for shared memory: global atomics
    ARB_LAUNCH(grid, kThreads, 0, stream, count_classes_kernel<T, false>)(
        labels, n, num_classes, ignore_index, 0, out);
  }
  return cudaGetLastError();
}

// Sum over the warp, in a fixed order.
template <typename T>
__device__ T warp_sum(T value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Sums a per-thread value over the block: deterministic (a fixed tree).
// `scratch` holds one value per warp. The result is valid in thread 0.
template <typename T>
__device__ T block_sum(T value, T* scratch) {
  value = warp_sum(value);
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = value;
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0) {
    for (int w = 0; w < static_cast<int>(blockDim.x) / kWarp; ++w) {
      total += scratch[w];
    }
  }
  __syncthreads();
  return total;
}

// The maximum of a per-thread value over the block, valid in every thread.
template <typename T>
__device__ T block_max(T value, T* scratch) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const T other = __shfl_down_sync(0xffffffffu, value, offset);
    value = other > value ? other : value;
  }
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = value;
  __syncthreads();
  T result = scratch[0];
  for (int w = 1; w < static_cast<int>(blockDim.x) / kWarp; ++w) {
    result = scratch[w] > result ? scratch[w] : result;
  }
  __syncthreads();
  return result;
}

// One block: see launch_prepare_counts. hist = [pixels | C class counts |
// bad pixels | 2 extremes] (mmseg_arb/ops/histogram_layout.py),
// out = [shift (C) | class weight (C) | mean denominator].
__global__ void prepare_counts_kernel(
    const long long* __restrict__ hist, double* __restrict__ counts,
    const float* __restrict__ class_weight, int num_classes, CountMode mode,
    double momentum, double smoothing, double tau, double weight_power,
    double max_weight_ratio, bool update, bool avg_non_ignore, int ranks,
    float* __restrict__ out) {
  __shared__ double scratch[kThreads / kWarp];
  __shared__ bool state_is_empty;
  __shared__ double shared_mean;
  const long long* batch_of = hist + 1;  // the class counts
  const bool running = mode == CountMode::kCumulative ||
                       mode == CountMode::kEma;
  if (!update && running) {  // has anything been accumulated yet?
    double total = 0.0;
    for (int c = threadIdx.x; c < num_classes; c += blockDim.x) {
      total += counts[c];
    }
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) state_is_empty = !(total > 0.0);
    __syncthreads();
  }
  const bool use_batch = !update && (mode == CountMode::kBatch ||
                                     (running && state_is_empty));
  double largest = 0.0;  // of n + smoothing, for the weights' bound
  for (int c = threadIdx.x; c < num_classes; c += blockDim.x) {
    const double batch = static_cast<double>(batch_of[c]);
    double n = counts[c];
    if (update && mode != CountMode::kPrior) {
      n = logic::updated_count(mode, n, batch, momentum);
      counts[c] = n;
    } else if (use_batch) {
      n = batch;
    }
    out[c] = logic::log_count_shift(n, smoothing, tau);
    largest = fmax(largest, n + smoothing);
  }
  // The same thread reads back the n it chose above (counts[c] is the
  // updated state): no other thread's write is involved.
  auto n_of = [&](int c) {
    return (use_batch ? static_cast<double>(batch_of[c]) : counts[c]) +
           smoothing;
  };
  double mean = 1.0;
  if (weight_power != 0.0) {
    largest = block_max(largest, scratch);
    double weighted = 0.0, labelled = 0.0;
    for (int c = threadIdx.x; c < num_classes; c += blockDim.x) {
      const double b = static_cast<double>(batch_of[c]);
      weighted += b * logic::raw_weight(n_of(c), largest, weight_power,
                                        max_weight_ratio);
      labelled += b;
    }
    weighted = block_sum(weighted, scratch);
    labelled = block_sum(labelled, scratch);
    if (threadIdx.x == 0) {
      shared_mean = labelled > 0.0 ? weighted / labelled : 1.0;
    }
    __syncthreads();
    mean = shared_mean;
  }
  // The loss's class weights, counted (all 1 at p = 0) times static, and
  // their sum over the (summed) labelled pixels for the denominator.
  double weighted = 0.0, labelled = 0.0;
  for (int c = threadIdx.x; c < num_classes; c += blockDim.x) {
    float w = 1.f;
    if (weight_power != 0.0 && largest > 0.0) {
      w = static_cast<float>(logic::raw_weight(n_of(c), largest,
                                               weight_power,
                                               max_weight_ratio) /
                             mean);
    }
    if (class_weight != nullptr) w *= class_weight[c];
    out[num_classes + c] = w;
    const double b = static_cast<double>(batch_of[c]);
    weighted += b * static_cast<double>(w);
    labelled += b;
  }
  weighted = block_sum(weighted, scratch);
  labelled = block_sum(labelled, scratch);
  if (threadIdx.x == 0) {
    // mmseg's mean denominator over the pixels counted (every rank's when
    // the histogram was summed), per rank: an unlabelled pixel counts 1
    // unless avg_non_ignore.
    const double unlabelled =
        avg_non_ignore ? 0.0 : static_cast<double>(hist[0]) - labelled;
    out[2 * num_classes] =
        static_cast<float>((weighted + unlabelled) / ranks);
  }
}

// Each thread takes V consecutive pixels of one image (V > 1 only where the
// spatial size is a multiple of V and the logits are aligned for V-wide
// vector loads), looping over the grid. stats holds each pixel's softmax
// statistics, planar: the max at [p], log_sum at [N * S + p].
template <typename F, typename L, int V>
__global__ void __launch_bounds__(kThreads, kLossBlocksPerSM<V>)
    arb_loss_forward_kernel(const F* __restrict__ logits,
                            const L* __restrict__ labels,
                            const float* __restrict__ shift,
                            const float* __restrict__ class_weight,
                            const float* __restrict__ weight, int64_t N,
                            int C, int64_t S, long long ignore_index,
                            Reduction reduction, float loss_weight,
                            bool avg_non_ignore, float* __restrict__ out,
                            float* __restrict__ stats,
                            float* __restrict__ partials,
                            float* __restrict__ scale) {
  __shared__ float scratch[kThreads / kWarp];
  const int64_t groups_per_image = S / V;
  const int64_t groups = N * groups_per_image;
  const int64_t pixels = N * S;
  float loss_sum = 0.f, denominator = 0.f;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x +
                   threadIdx.x;
       g < groups; g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = g / groups_per_image;
    const int64_t s0 = (g - n * groups_per_image) * V;
    const int64_t p0 = n * S + s0;
    int target[V];
    bool valid[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      valid[v] = logic::valid_target(labels, p0 + v, C, ignore_index,
                                     &target[v]);
    }
    logic::SoftmaxStats pixel_stats[V];
    float shifted_target[V];
    logic::forward_pixels<V>(logits + n * C * S + s0, S, C, shift, target,
                             pixel_stats, shifted_target);
#pragma unroll
    for (int v = 0; v < V; ++v) {
      stats[p0 + v] = pixel_stats[v].max;
      stats[pixels + p0 + v] = pixel_stats[v].log_sum;
      const logic::PixelTerms terms = logic::pixel_terms(
          valid[v], logic::pixel_loss(pixel_stats[v], shifted_target[v]),
          class_weight != nullptr ? __ldg(class_weight + target[v]) : 1.f,
          weight != nullptr ? weight[p0 + v] : 1.f, avg_non_ignore);
      if (reduction == Reduction::kNone) {
        out[p0 + v] = loss_weight * terms.loss;
      }
      loss_sum += terms.loss;
      denominator += terms.denominator;
    }
  }
  if (reduction != Reduction::kMean && blockIdx.x == 0 && threadIdx.x == 0) {
    scale[0] = loss_weight;
  }
  if (reduction == Reduction::kNone) return;
  loss_sum = block_sum(loss_sum, scratch);
  denominator = block_sum(denominator, scratch);
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = loss_sum;
    partials[2 * blockIdx.x + 1] = denominator;
  }
}

// One block: the block partials of the forward into the scalar loss (and,
// for kMean, the scale its backward uses), in a fixed order. A given
// denominator (not null) replaces the partials' for kMean.
__global__ void reduce_loss_kernel(const float* __restrict__ partials,
                                   int blocks, Reduction reduction,
                                   float loss_weight,
                                   const float* __restrict__ given,
                                   float* __restrict__ out,
                                   float* __restrict__ scale) {
  __shared__ double scratch[kThreads / kWarp];
  double loss_sum = 0.0, denominator = 0.0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
    loss_sum += partials[2 * b];
    denominator += partials[2 * b + 1];
  }
  loss_sum = block_sum(loss_sum, scratch);
  denominator = block_sum(denominator, scratch);
  if (threadIdx.x != 0) return;
  if (given != nullptr) denominator = given[0];
  if (reduction == Reduction::kMean) {
    // As mmseg: an all-ignored batch gives 0, not 0 / 0.
    const double per_unit =
        loss_weight / (denominator + static_cast<double>(FLT_EPSILON));
    scale[0] = static_cast<float>(per_unit);
    out[0] = static_cast<float>(loss_sum * per_unit);
  } else {
    out[0] = static_cast<float>(loss_weight * loss_sum);
  }
}

template <typename F, typename L, int V>
__global__ void __launch_bounds__(kThreads, kLossBlocksPerSM<V>)
    arb_loss_backward_kernel(const F* __restrict__ logits,
                             const L* __restrict__ labels,
                             const float* __restrict__ shift,
                             const float* __restrict__ class_weight,
                             const float* __restrict__ weight,
                             const float* __restrict__ stats,
                             const float* __restrict__ grad_loss,
                             bool grad_loss_is_scalar,
                             const float* __restrict__ scale, int64_t N,
                             int C, int64_t S, long long ignore_index,
                             F* __restrict__ grad) {
  const float unit = scale[0];
  const float scalar_grad = grad_loss_is_scalar ? grad_loss[0] * unit : 0.f;
  const int64_t groups_per_image = S / V;
  const int64_t groups = N * groups_per_image;
  const int64_t pixels = N * S;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x +
                   threadIdx.x;
       g < groups; g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = g / groups_per_image;
    const int64_t s0 = (g - n * groups_per_image) * V;
    const int64_t p0 = n * S + s0;
    int target[V];
    logic::SoftmaxStats pixel_stats[V];
    float pixel_grad[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const bool valid = logic::valid_target(labels, p0 + v, C, ignore_index,
                                             &target[v]);
      float gv = 0.f;
      if (valid) {
        gv = grad_loss_is_scalar ? scalar_grad : grad_loss[p0 + v] * unit;
        if (class_weight != nullptr) gv *= __ldg(class_weight + target[v]);
        if (weight != nullptr) gv *= weight[p0 + v];
      }
      pixel_grad[v] = gv;
      pixel_stats[v] = logic::SoftmaxStats{stats[p0 + v],
                                           stats[pixels + p0 + v]};
    }
    const int64_t offset = n * C * S + s0;
    logic::backward_pixels<V>(logits + offset, S, C, shift, target,
                              pixel_stats, pixel_grad, grad + offset);
  }
}

// Blocks of a grid-stride loss kernel over `groups` pixel groups: one per
// kThreads groups, at most as many as the device holds at once (the
// occupancy API's figure for this kernel on the current device), so that
// none waits for another and none is left idle on a small input. Looked up
// once per kernel and device; a failed look-up is not kept.
template <auto kKernel>
unsigned int resident_grid(int64_t groups, int num_sms) {
  static std::mutex mutex;
  static std::unordered_map<int, int> per_device;
  int device = 0;
  cudaGetDevice(&device);
  int per_sm = 0;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    auto it = per_device.find(device);
    if (it != per_device.end()) {
      per_sm = it->second;
    } else if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                   &per_sm, kKernel, kThreads, 0) == cudaSuccess &&
               per_sm > 0) {
      per_device.emplace(device, per_sm);
    } else {
      cudaGetLastError();  // not this launch's error: forget it
      per_sm = 1;
    }
  }
  const int64_t cap = int64_t(num_sms > 0 ? num_sms : 1) * per_sm;
  int64_t blocks = (groups + kThreads - 1) / kThreads;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks);
}

// V-wide vector access needs V | S and aligned base pointers.
template <typename F>
int vector_width(int64_t S, const void* a, const void* b) {
  constexpr int kWide = 16 / sizeof(F);
  const bool aligned = reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(b) % 16 == 0;
  return S % kWide == 0 && aligned ? kWide : 1;
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

cudaError_t launch_prepare_counts(const long long* hist, double* counts,
                                  const float* class_weight, int num_classes,
                                  CountMode mode, double momentum,
                                  double smoothing, double tau,
                                  double weight_power,
                                  double max_weight_ratio, bool update,
                                  bool avg_non_ignore, int ranks, float* out,
                                  cudaStream_t stream) {
  ARB_LAUNCH(1, kThreads, 0, stream, prepare_counts_kernel)(
      hist, counts, class_weight, num_classes, mode, momentum, smoothing,
      tau, weight_power, max_weight_ratio, update, avg_non_ignore, ranks,
      out);
  return cudaGetLastError();
}

// The grids of the loss kernels never exceed this: a group holds at
// least one pixel, and no SM holds more than 2048 threads.
int loss_reduce_blocks(int64_t pixels, int num_sms) {
  constexpr int64_t kMaxResident = 2048 / kThreads;
  const int64_t cap = int64_t(num_sms > 0 ? num_sms : 1) * kMaxResident;
  int64_t blocks = (pixels + kThreads - 1) / kThreads;
  if (blocks > cap) blocks = cap;
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

cudaError_t launch_arb_loss_forward(
    const void* logits, FloatType ftype, const void* labels, LabelType ltype,
    const float* shift, const float* class_weight, const float* weight,
    int64_t N, int C, int64_t S, int64_t ignore_index, Reduction reduction,
    float loss_weight, bool avg_non_ignore, const float* denominator,
    float* out, float* stats, float* partials, float* scale, int num_sms,
    cudaStream_t stream) {
  unsigned int grid = 0;
  const cudaError_t launched =
      dispatch(ftype, ltype, [&](auto f_tag, auto l_tag) {
        using F = std::remove_const_t<std::remove_pointer_t<decltype(f_tag)>>;
        using L = std::remove_const_t<std::remove_pointer_t<decltype(l_tag)>>;
        constexpr int kWide = 16 / sizeof(F);
        const auto* z = static_cast<const F*>(logits);
        const auto* y = static_cast<const L*>(labels);
        if (vector_width<F>(S, logits, logits) > 1) {
          grid = resident_grid<&arb_loss_forward_kernel<F, L, kWide>>(
              N * (S / kWide), num_sms);
          ARB_LAUNCH(grid, kThreads, 0, stream,
                     arb_loss_forward_kernel<F, L, kWide>)(
              z, y, shift, class_weight, weight, N, C, S, ignore_index,
              reduction, loss_weight, avg_non_ignore, out, stats, partials,
              scale);
        } else {
          grid = resident_grid<&arb_loss_forward_kernel<F, L, 1>>(N * S,
                                                                  num_sms);
          ARB_LAUNCH(grid, kThreads, 0, stream,
                     arb_loss_forward_kernel<F, L, 1>)(
              z, y, shift, class_weight, weight, N, C, S, ignore_index,
              reduction, loss_weight, avg_non_ignore, out, stats, partials,
              scale);
        }
        return cudaGetLastError();
      });
  if (launched != cudaSuccess || reduction == Reduction::kNone) {
    return launched;
  }
  ARB_LAUNCH(1, kThreads, 0, stream, reduce_loss_kernel)(
      partials, static_cast<int>(grid), reduction, loss_weight, denominator,
      out, scale);
  return cudaGetLastError();
}

cudaError_t launch_arb_loss_backward(
    const void* logits, FloatType ftype, const void* labels, LabelType ltype,
    const float* shift, const float* class_weight, const float* weight,
    const float* stats, const float* grad_loss, bool grad_loss_is_scalar,
    const float* scale, int64_t N, int C, int64_t S, int64_t ignore_index,
    void* grad_logits, int num_sms, cudaStream_t stream) {
  return dispatch(ftype, ltype, [&](auto f_tag, auto l_tag) {
    using F = std::remove_const_t<std::remove_pointer_t<decltype(f_tag)>>;
    using L = std::remove_const_t<std::remove_pointer_t<decltype(l_tag)>>;
    constexpr int kWide = 16 / sizeof(F);
    const auto* z = static_cast<const F*>(logits);
    const auto* y = static_cast<const L*>(labels);
    auto* dz = static_cast<F*>(grad_logits);
    if (vector_width<F>(S, logits, grad_logits) > 1) {
      const unsigned int grid =
          resident_grid<&arb_loss_backward_kernel<F, L, kWide>>(
              N * (S / kWide), num_sms);
      ARB_LAUNCH(grid, kThreads, 0, stream,
                 arb_loss_backward_kernel<F, L, kWide>)(
          z, y, shift, class_weight, weight, stats, grad_loss,
          grad_loss_is_scalar, scale, N, C, S, ignore_index, dz);
    } else {
      const unsigned int grid =
          resident_grid<&arb_loss_backward_kernel<F, L, 1>>(N * S, num_sms);
      ARB_LAUNCH(grid, kThreads, 0, stream,
                 arb_loss_backward_kernel<F, L, 1>)(
          z, y, shift, class_weight, weight, stats, grad_loss,
          grad_loss_is_scalar, scale, N, C, S, ignore_index, dz);
    }
    return cudaGetLastError();
  });
}

}  // namespace mmseg_arb
