// mmseg_arb/ops/csrc/arb_kernels.cu built on the host with the emulator of
// cuda_emulator.h, behind a C interface for ctypes: the launch wrappers the
// extension calls, on host pointers, and the record of what they launched.
// tests/test_ops/test_emulated_kernels.py builds it and compares every
// kernel with the PyTorch path. Enums travel as their int values.
#include "cuda_emulator.h"
// The kernels themselves, unchanged.
#include "arb_kernels.cu"

using mmseg_arb::CountMode;
using mmseg_arb::FloatType;
using mmseg_arb::LabelType;
using mmseg_arb::Reduction;

extern "C" {

// The occupancy API's answer on `device`, which becomes the current one.
void emu_configure(int blocks_per_sm, int device) {
  emu::blocks_per_sm = blocks_per_sm;
  emu::device = device;
  emu::launches.clear();
}

int emu_launch_count() { return static_cast<int>(emu::launches.size()); }

// Launch i as (grid, threads, shared bytes).
void emu_launch_at(int i, unsigned int* grid, unsigned int* threads,
                   unsigned long long* shared_bytes) {
  const emu::Launch& launch = emu::launches.at(i);
  *grid = launch.grid;
  *threads = launch.threads;
  *shared_bytes = launch.shared_bytes;
}

int emu_count_classes(const void* labels, int type, int64_t n,
                      int num_classes, int64_t ignore_index,
                      unsigned long long* out, int num_sms) {
  return mmseg_arb::launch_count_classes(labels, static_cast<LabelType>(type),
                                         n, num_classes, ignore_index, out,
                                         num_sms, nullptr);
}

int emu_prepare_counts(const long long* hist, double* counts,
                       const float* class_weight, int num_classes, int mode,
                       double momentum, double smoothing, double tau,
                       double weight_power, double max_weight_ratio,
                       int update, int avg_non_ignore, int ranks,
                       float* out) {
  return mmseg_arb::launch_prepare_counts(
      hist, counts, class_weight, num_classes, static_cast<CountMode>(mode),
      momentum, smoothing, tau, weight_power, max_weight_ratio, update != 0,
      avg_non_ignore != 0, ranks, out, nullptr);
}

int emu_loss_reduce_blocks(int64_t pixels, int num_sms) {
  return mmseg_arb::loss_reduce_blocks(pixels, num_sms);
}

int emu_arb_loss_forward(const void* logits, int ftype, const void* labels,
                         int ltype, const float* shift,
                         const float* class_weight, const float* weight,
                         int64_t N, int C, int64_t S, int64_t ignore_index,
                         int reduction, float loss_weight, int avg_non_ignore,
                         float* out, float* stats, float* partials,
                         float* scale, int num_sms) {
  return mmseg_arb::launch_arb_loss_forward(
      logits, static_cast<FloatType>(ftype), labels,
      static_cast<LabelType>(ltype), shift, class_weight, weight, N, C, S,
      ignore_index, static_cast<Reduction>(reduction), loss_weight,
      avg_non_ignore != 0, nullptr, out, stats, partials, scale, num_sms,
      nullptr);
}

// The same with a given mean denominator (null: the kernels' own).
int emu_arb_loss_forward_given(
    const void* logits, int ftype, const void* labels, int ltype,
    const float* shift, const float* class_weight, const float* weight,
    int64_t N, int C, int64_t S, int64_t ignore_index, int reduction,
    float loss_weight, int avg_non_ignore, const float* denominator,
    float* out, float* stats, float* partials, float* scale, int num_sms) {
  return mmseg_arb::launch_arb_loss_forward(
      logits, static_cast<FloatType>(ftype), labels,
      static_cast<LabelType>(ltype), shift, class_weight, weight, N, C, S,
      ignore_index, static_cast<Reduction>(reduction), loss_weight,
      avg_non_ignore != 0, denominator, out, stats, partials, scale, num_sms,
      nullptr);
}

int emu_arb_loss_backward(const void* logits, int ftype, const void* labels,
                          int ltype, const float* shift,
                          const float* class_weight, const float* weight,
                          const float* stats, const float* grad_loss,
                          int grad_loss_is_scalar, const float* scale,
                          int64_t N, int C, int64_t S, int64_t ignore_index,
                          void* grad_logits, int num_sms) {
  return mmseg_arb::launch_arb_loss_backward(
      logits, static_cast<FloatType>(ftype), labels,
      static_cast<LabelType>(ltype), shift, class_weight, weight, stats,
      grad_loss, grad_loss_is_scalar != 0, scale, N, C, S, ignore_index,
      grad_logits, num_sms, nullptr);
}

}  // extern "C"
