// CUDA kernels of mmseg-arb: per-class pixel counting, the count-state
// update and the fused ARB-Loss (log-count shift + softmax cross-entropy).
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

// The running count modes, as ARBLoss's count_mode names them.
enum class CountMode { kBatch, kCumulative, kEma };

// Histogram of `n` labels into `out[0..num_classes + 2]`: out[c] += pixels
// of class c, out[num_classes] += bad pixels (neither in [0, num_classes)
// nor `ignore_index`), out[num_classes + 1] = max(itself, the largest bad
// label above the range), out[num_classes + 2] = max(itself, minus the
// smallest bad label below zero). `out` must hold num_classes + 3 zeroed
// (or running) 64-bit counters. Privatised shared-memory histograms when they fit,
// warp-aggregated global atomics otherwise. Asynchronous on `stream`.
cudaError_t launch_count_classes(const void* labels, LabelType type,
                                 int64_t n, int num_classes,
                                 int64_t ignore_index,
                                 unsigned long long* out, int num_sms,
                                 cudaStream_t stream);

// counts[c] <- batch[c] (kBatch), counts[c] + batch[c] (kCumulative), or
// (1 - momentum) * counts[c] + momentum * batch[c] (kEma).
cudaError_t launch_update_counts(double* counts, const long long* batch,
                                 int num_classes, CountMode mode,
                                 double momentum, cudaStream_t stream);

// Forward of the fused loss over logits (N, C, S) (S = spatial size, 1 for
// (N, C) input) and labels (N, S): per pixel,
//   lse  = log sum_c exp(z_c + shift_c)
//   loss = (lse - z_y - shift_y) * weight_y   (0 if y is ignored/invalid)
// One read of the logits; only `loss` and `lse` (N*S floats each) written.
// `class_weight` may be null.
cudaError_t launch_arb_loss_forward(const void* logits, FloatType ftype,
                                    const void* labels, LabelType ltype,
                                    const float* shift,
                                    const float* class_weight, int64_t N,
                                    int C, int64_t S, int64_t ignore_index,
                                    float* loss, float* lse,
                                    cudaStream_t stream);

// Backward: grad_z_c = (exp(z_c + shift_c - lse) - [c == y]) * g * weight_y
// with g = grad_loss per pixel (0 where y is ignored/invalid). One read of
// the logits, one write of the gradient (in the logits' type).
cudaError_t launch_arb_loss_backward(const void* logits, FloatType ftype,
                                     const void* labels, LabelType ltype,
                                     const float* shift,
                                     const float* class_weight,
                                     const float* lse, const float* grad_loss,
                                     int64_t N, int C, int64_t S,
                                     int64_t ignore_index, void* grad_logits,
                                     cudaStream_t stream);

}  // namespace mmseg_arb
