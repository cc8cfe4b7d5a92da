// CUDA kernels of mmseg-arb: per-class pixel counting, the count-state
// "prepare" step and the fused ARB-Loss (log-count shift + softmax
// cross-entropy, reduced in the kernel).
//
// This header and arb_kernels.cu use only the CUDA runtime, no torch
// headers, so the kernels compile on their own (`nvcc -c arb_kernels.cu`);
// binding.cpp adapts them to torch tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace mmseg_arb {

enum class LabelType { kInt64, kInt32, kUInt8 };
enum class FloatType { kFloat32, kFloat16, kBFloat16 };

// ARBLoss's count_mode, from config to kernel.
enum class CountMode { kBatch, kCumulative, kEma, kPrior };

// How the fused loss is reduced: per pixel, summed, or mmseg's mean.
enum class Reduction { kNone, kSum, kMean };

// Histogram of `n` labels into `out[0..num_classes + 2]`: out[c] += pixels
// of class c, out[num_classes] += bad pixels (neither in [0, num_classes)
// nor `ignore_index`), out[num_classes + 1] = max(itself, the largest bad
// label above the range), out[num_classes + 2] = max(itself, minus the
// smallest bad label below zero). `out` must hold num_classes + 3 zeroed
// (or running) 64-bit counters. Privatised shared-memory histograms when
// they fit, warp-aggregated global atomics otherwise. Asynchronous.
cudaError_t launch_count_classes(const void* labels, LabelType type,
                                 int64_t n, int num_classes,
                                 int64_t ignore_index,
                                 unsigned long long* out, int num_sms,
                                 cudaStream_t stream);

// The step's "prepare", one block: from the histogram `hist` (the pixel
// total, then the C + 3 entries above, as mmseg_arb/ops/histogram_layout.py
// lays them out; the bad-label entries are not read), fold the class
// counts into the running `counts` if `update` (per `mode`; a prior stays),
// pick the counts n the loss uses (outside an update: the batch for kBatch,
// the state for kPrior, the state or, while it is all zero, the batch for
// the running modes), write out[c] = tau * log(n_c + smoothing) (-1e30
// where that is 0; 0 at tau = 0), the class weight out[C + c] =
// (n_c + smoothing)^-p, counts raised to at least
// max_n / max_weight_ratio^(1/p), normalised to a mean of 1 over the
// batch's labelled pixels (1 everywhere at p = 0, or where every count is
// 0), times class_weight[c] if not null, and out[2C] = (sum_c batch_c *
// out[C + c] + (avg_non_ignore ? 0 : pixels - sum_c batch_c)) / ranks:
// mmseg's mean denominator over the pixels counted, shared among `ranks`.
cudaError_t launch_prepare_counts(const long long* hist, double* counts,
                                  const float* class_weight, int num_classes,
                                  CountMode mode, double momentum,
                                  double smoothing, double tau,
                                  double weight_power,
                                  double max_weight_ratio, bool update,
                                  bool avg_non_ignore, int ranks, float* out,
                                  cudaStream_t stream);

// Forward of the fused loss over logits (N, C, S) (S = spatial size, 1 for
// (N, C) input) and labels (N, S): per pixel p of target t, with the
// shifted logits x_c = z_c + shift_c (rounded to float32),
//   stats[p]         = max_c x_c
//   stats[N * S + p] = log sum_c exp(x_c - max_c x_c)       (>= 0)
//   loss_p  = (stats[p] - x_t + stats[N * S + p]) * class_weight[t] * weight[p]
// (0 where t is ignored or out of range; class_weight and weight may be
// null). kNone writes loss_weight * loss_p to `out` (N * S floats); kSum and
// kMean write the scalar out[0] = loss_weight * sum_p loss_p, divided for
// kMean by mmseg's denominator (sum of the class weights of the labelled
// pixels, plus 1 per ignored pixel unless avg_non_ignore; or, if not null,
// denominator[0], read on the device) + FLT_EPSILON, through `partials`
// (2 * loss_reduce_blocks(N * S, num_sms) floats),
// deterministically. scale[0] gets what d out / d loss_p is per unit of
// weight: loss_weight, divided for kMean as the loss. One read of the
// logits; two launches for kSum and kMean, one for kNone.
int loss_reduce_blocks(int64_t pixels, int num_sms);
cudaError_t launch_arb_loss_forward(
    const void* logits, FloatType ftype, const void* labels, LabelType ltype,
    const float* shift, const float* class_weight, const float* weight,
    int64_t N, int C, int64_t S, int64_t ignore_index, Reduction reduction,
    float loss_weight, bool avg_non_ignore, const float* denominator,
    float* out, float* stats, float* partials, float* scale, int num_sms,
    cudaStream_t stream);

// Backward: grad_z_c = (exp(x_c - stats[p] - stats[N * S + p]) - [c == t])
// * g_p, the difference taken before the exp's scaling, with
// g_p = grad_out * scale[0] * class_weight[t] * weight[p] (0 where t is
// ignored or out of range); grad_out is grad_loss[0] if
// `grad_loss_is_scalar`, else grad_loss[p]. Both read on the device. One
// read of the logits, one write of the gradient (in the logits' type).
cudaError_t launch_arb_loss_backward(
    const void* logits, FloatType ftype, const void* labels, LabelType ltype,
    const float* shift, const float* class_weight, const float* weight,
    const float* stats, const float* grad_loss, bool grad_loss_is_scalar,
    const float* scale, int64_t N, int C, int64_t S, int64_t ignore_index,
    void* grad_logits, int num_sms, cudaStream_t stream);

}  // namespace mmseg_arb
