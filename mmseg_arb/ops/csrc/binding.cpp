// Torch side of the mmseg-arb CUDA ops: checks, allocation, streams, and
// registration as the CUDA kernels of torch.ops.mmseg_arb.*, whose schemas
// (and shape-only fake implementations) mmseg_arb/ops/library.py defines.
// The kernels themselves live in the torch-free arb_kernels.cu.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <climits>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "arb_kernels.cuh"

namespace {

using mmseg_arb::FloatType;
using mmseg_arb::LabelType;

LabelType label_type(const at::Tensor& label) {
  switch (label.scalar_type()) {
    case at::kLong:
      return LabelType::kInt64;
    case at::kInt:
      return LabelType::kInt32;
    case at::kByte:
      return LabelType::kUInt8;
    default:
      TORCH_CHECK(false, "mmseg_arb: labels must be int64, int32 or uint8, got ",
                  label.scalar_type());
  }
}

FloatType float_type(const at::Tensor& logits) {
  switch (logits.scalar_type()) {
    case at::kFloat:
      return FloatType::kFloat32;
    case at::kHalf:
      return FloatType::kFloat16;
    case at::kBFloat16:
      return FloatType::kBFloat16;
    default:
      TORCH_CHECK(false, "mmseg_arb: logits must be float32, float16 or ",
                  "bfloat16, got ", logits.scalar_type());
  }
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "mmseg_arb::", op, " failed to launch: ",
              cudaGetErrorString(err));
}

cudaStream_t current_stream() {
  return c10::cuda::getCurrentCUDAStream().stream();
}

// Looked up once per device, not per step. (ATen's cached device
// properties would pull in cuBLAS/cuSPARSE headers, which a minimal CUDA
// toolkit lacks.)
int multiprocessor_count(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, int> counts;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = counts.find(device);
  if (it == counts.end()) {
    int count = 0;
    check_launch(cudaDeviceGetAttribute(
                     &count, cudaDevAttrMultiProcessorCount, device),
                 "cudaDeviceGetAttribute");
    it = counts.emplace(device, count).first;
  }
  return it->second;
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "mmseg_arb: ", name, " must be a CUDA tensor");
}

// (C + 3,) int64: pixels of each class, then the bad ones and their
// extremes (see launch_count_classes).
at::Tensor class_histogram(const at::Tensor& label, int64_t num_classes,
                           int64_t ignore_index) {
  check_cuda(label, "label");
  TORCH_CHECK(num_classes > 0 && num_classes < INT_MAX,
              "mmseg_arb: num_classes must be in [1, INT_MAX)");
  const c10::cuda::CUDAGuard guard(label.device());
  const at::Tensor flat = label.contiguous();
  at::Tensor out =
      at::zeros({num_classes + 3}, label.options().dtype(at::kLong));
  const int sms = multiprocessor_count(label.get_device());
  check_launch(mmseg_arb::launch_count_classes(
                   flat.data_ptr(), label_type(flat), flat.numel(),
                   static_cast<int>(num_classes), ignore_index,
                   reinterpret_cast<unsigned long long*>(out.data_ptr<int64_t>()),
                   sms, current_stream()),
               "class_histogram");
  return out;
}

mmseg_arb::CountMode count_mode_of(c10::string_view name) {
  if (name == "batch") return mmseg_arb::CountMode::kBatch;
  if (name == "cumulative") return mmseg_arb::CountMode::kCumulative;
  TORCH_CHECK(name == "ema", "mmseg_arb: count_mode must be batch, ",
              "cumulative or ema, got ", name);
  return mmseg_arb::CountMode::kEma;
}

void update_counts(at::Tensor counts, const at::Tensor& batch,
                   c10::string_view count_mode, double momentum) {
  check_cuda(counts, "counts");
  check_cuda(batch, "batch");
  TORCH_CHECK(counts.scalar_type() == at::kDouble && counts.is_contiguous(),
              "mmseg_arb: counts must be a contiguous float64 tensor");
  TORCH_CHECK(batch.scalar_type() == at::kLong &&
                  batch.numel() == counts.numel(),
              "mmseg_arb: batch counts must be int64 with one per class");
  const mmseg_arb::CountMode mode = count_mode_of(count_mode);
  const c10::cuda::CUDAGuard guard(counts.device());
  const at::Tensor b = batch.contiguous();
  check_launch(mmseg_arb::launch_update_counts(
                   counts.data_ptr<double>(),
                   reinterpret_cast<const long long*>(b.data_ptr<int64_t>()),
                   static_cast<int>(counts.numel()), mode, momentum,
                   current_stream()),
               "update_counts");
}

struct LossShape {
  int64_t N, C, S;
};

LossShape check_loss_inputs(const at::Tensor& logits, const at::Tensor& label,
                            const at::Tensor& shift,
                            const c10::optional<at::Tensor>& class_weight) {
  check_cuda(logits, "logits");
  check_cuda(label, "label");
  check_cuda(shift, "shift");
  TORCH_CHECK(logits.dim() >= 2, "mmseg_arb: logits must be (N, C, ...)");
  const int64_t N = logits.size(0), C = logits.size(1);
  TORCH_CHECK(C > 0 && C < INT_MAX, "mmseg_arb: bad number of classes");
  TORCH_CHECK(label.numel() * C == logits.numel(),
              "mmseg_arb: labels do not match the logits' shape");
  TORCH_CHECK(shift.scalar_type() == at::kFloat && shift.numel() == C,
              "mmseg_arb: shift must be float32 with one entry per class");
  if (class_weight.has_value()) {
    TORCH_CHECK(class_weight->scalar_type() == at::kFloat &&
                    class_weight->numel() == C && class_weight->is_cuda(),
                "mmseg_arb: class_weight must be float32 CUDA, one per class");
  }
  const int64_t S = N == 0 ? 0 : label.numel() / N;
  return {N, C, S};
}

const float* optional_ptr(const c10::optional<at::Tensor>& t,
                          at::Tensor& keep) {
  if (!t.has_value()) return nullptr;
  keep = t->contiguous();
  return keep.data_ptr<float>();
}

std::tuple<at::Tensor, at::Tensor> arb_loss_forward(
    const at::Tensor& logits, const at::Tensor& label, const at::Tensor& shift,
    const c10::optional<at::Tensor>& class_weight, int64_t ignore_index) {
  const LossShape s = check_loss_inputs(logits, label, shift, class_weight);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor z = logits.contiguous(), y = label.contiguous(),
                   sh = shift.contiguous();
  at::Tensor cw;
  const float* cw_ptr = optional_ptr(class_weight, cw);
  at::Tensor loss = at::empty(label.sizes(), logits.options().dtype(at::kFloat));
  at::Tensor lse = at::empty_like(loss);
  if (loss.numel() == 0) return {loss, lse};
  check_launch(mmseg_arb::launch_arb_loss_forward(
                   z.data_ptr(), float_type(z), y.data_ptr(), label_type(y),
                   sh.data_ptr<float>(), cw_ptr, s.N, static_cast<int>(s.C),
                   s.S, ignore_index, loss.data_ptr<float>(),
                   lse.data_ptr<float>(), current_stream()),
               "arb_loss_forward");
  return {loss, lse};
}

at::Tensor arb_loss_backward(const at::Tensor& grad_loss,
                             const at::Tensor& logits, const at::Tensor& label,
                             const at::Tensor& shift,
                             const c10::optional<at::Tensor>& class_weight,
                             const at::Tensor& lse, int64_t ignore_index) {
  const LossShape s = check_loss_inputs(logits, label, shift, class_weight);
  TORCH_CHECK(lse.numel() == label.numel() && grad_loss.numel() == label.numel(),
              "mmseg_arb: lse and grad_loss must have one entry per pixel");
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor z = logits.contiguous(), y = label.contiguous(),
                   sh = shift.contiguous(), l = lse.contiguous(),
                   g = grad_loss.to(at::kFloat).contiguous();
  at::Tensor cw;
  const float* cw_ptr = optional_ptr(class_weight, cw);
  at::Tensor grad = at::empty_like(z);
  if (grad.numel() == 0) return grad;
  check_launch(mmseg_arb::launch_arb_loss_backward(
                   z.data_ptr(), float_type(z), y.data_ptr(), label_type(y),
                   sh.data_ptr<float>(), cw_ptr, l.data_ptr<float>(),
                   g.data_ptr<float>(), s.N, static_cast<int>(s.C), s.S,
                   ignore_index, grad.data_ptr(),
                   current_stream()),
               "arb_loss_backward");
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmseg_arb, CUDA, m) {
  m.impl("class_histogram", &class_histogram);
  m.impl("update_counts", &update_counts);
  m.impl("arb_loss_forward", &arb_loss_forward);
  m.impl("arb_loss_backward", &arb_loss_backward);
}

// A Python module too, so that the built extension imports as
// mmseg_arb._ext (which loads the registrations above).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
