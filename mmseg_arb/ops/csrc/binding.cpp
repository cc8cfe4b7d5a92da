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
#include <vector>
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

// Runs `launch` (which returns the launches' cudaGetLastError) and checks
// it. An error pending from before (an earlier, unrelated operation) is
// reported as such first, not as this op's.
template <typename Launch>
void launch_checked(const char* op, Launch&& launch) {
  const cudaError_t earlier = cudaGetLastError();
  TORCH_CHECK(earlier == cudaSuccess, "mmseg_arb::", op,
              ": a CUDA error from an earlier operation (not this one) ",
              "was pending: ", cudaGetErrorString(earlier));
  check_launch(launch(), op);
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

// (C + 4,) int64, laid out as mmseg_arb/ops/histogram_layout.py says: the
// pixel total, then what launch_count_classes counts (the pixels of each
// class, the bad ones and their extremes).
at::Tensor class_histogram(const at::Tensor& label, int64_t num_classes,
                           int64_t ignore_index) {
  check_cuda(label, "label");
  TORCH_CHECK(num_classes > 0 && num_classes < INT_MAX,
              "mmseg_arb: num_classes must be in [1, INT_MAX)");
  const c10::cuda::CUDAGuard guard(label.device());
  const at::Tensor flat = label.contiguous();
  at::Tensor out =
      at::zeros({num_classes + 4}, label.options().dtype(at::kLong));
  out.narrow(0, 0, 1).fill_(flat.numel());
  const int sms = multiprocessor_count(label.get_device());
  launch_checked("class_histogram", [&] {
    return mmseg_arb::launch_count_classes(
        flat.data_ptr(), label_type(flat), flat.numel(),
        static_cast<int>(num_classes), ignore_index,
        reinterpret_cast<unsigned long long*>(out.data_ptr<int64_t>()) + 1,
        sms, current_stream());
  });
  return out;
}

mmseg_arb::CountMode count_mode_of(c10::string_view name) {
  if (name == "batch") return mmseg_arb::CountMode::kBatch;
  if (name == "cumulative") return mmseg_arb::CountMode::kCumulative;
  if (name == "ema") return mmseg_arb::CountMode::kEma;
  TORCH_CHECK(name == "prior", "mmseg_arb: count_mode must be batch, ",
              "cumulative, ema or prior, got ", name);
  return mmseg_arb::CountMode::kPrior;
}

mmseg_arb::Reduction reduction_of(c10::string_view name) {
  if (name == "none") return mmseg_arb::Reduction::kNone;
  if (name == "sum") return mmseg_arb::Reduction::kSum;
  TORCH_CHECK(name == "mean", "mmseg_arb: reduction must be none, sum or ",
              "mean, got ", name);
  return mmseg_arb::Reduction::kMean;
}

at::Tensor prepare_counts(const at::Tensor& hist, at::Tensor counts,
                          const c10::optional<at::Tensor>& class_weight,
                          c10::string_view count_mode, double momentum,
                          double smoothing, double tau, double weight_power,
                          double max_weight_ratio, bool update,
                          bool avg_non_ignore, int64_t ranks) {
  check_cuda(hist, "hist");
  check_cuda(counts, "counts");
  const int64_t C = counts.numel();
  TORCH_CHECK(counts.scalar_type() == at::kDouble && counts.is_contiguous(),
              "mmseg_arb: counts must be a contiguous float64 tensor");
  TORCH_CHECK(C > 0 && C < INT_MAX, "mmseg_arb: bad number of classes");
  TORCH_CHECK(hist.scalar_type() == at::kLong && hist.numel() == C + 4 &&
                  hist.is_contiguous(),
              "mmseg_arb: hist must be a contiguous int64 class_histogram");
  if (class_weight.has_value()) {
    TORCH_CHECK(class_weight->scalar_type() == at::kFloat &&
                    class_weight->numel() == C && class_weight->is_cuda() &&
                    class_weight->is_contiguous(),
                "mmseg_arb: class_weight must be contiguous float32 CUDA, ",
                "one per class");
  }
  TORCH_CHECK(ranks > 0 && ranks < INT_MAX,
              "mmseg_arb: bad number of ranks");
  const mmseg_arb::CountMode mode = count_mode_of(count_mode);
  const c10::cuda::CUDAGuard guard(counts.device());
  // The shift, the class weights, the mean's denominator.
  at::Tensor out =
      at::empty({2 * C + 1}, counts.options().dtype(at::kFloat));
  launch_checked("prepare_counts", [&] {
    return mmseg_arb::launch_prepare_counts(
        reinterpret_cast<const long long*>(hist.data_ptr<int64_t>()),
        counts.data_ptr<double>(),
        class_weight.has_value() ? class_weight->data_ptr<float>() : nullptr,
        static_cast<int>(C), mode, momentum, smoothing, tau, weight_power,
        max_weight_ratio, update, avg_non_ignore, static_cast<int>(ranks),
        out.data_ptr<float>(), current_stream());
  });
  return out;
}

struct LossShape {
  int64_t N, C, S;
};

LossShape check_loss_inputs(const at::Tensor& logits, const at::Tensor& label,
                            const at::Tensor& shift,
                            const c10::optional<at::Tensor>& class_weight,
                            const c10::optional<at::Tensor>& weight) {
  check_cuda(logits, "logits");
  check_cuda(label, "label");
  check_cuda(shift, "shift");
  TORCH_CHECK(logits.dim() >= 2, "mmseg_arb: logits must be (N, C, ...)");
  TORCH_CHECK(logits.is_contiguous() && label.is_contiguous(),
              "mmseg_arb: logits and labels must be contiguous");
  const int64_t N = logits.size(0), C = logits.size(1);
  TORCH_CHECK(C > 0 && C < INT_MAX, "mmseg_arb: bad number of classes");
  TORCH_CHECK(label.numel() * C == logits.numel(),
              "mmseg_arb: labels do not match the logits' shape");
  TORCH_CHECK(shift.scalar_type() == at::kFloat && shift.numel() == C &&
                  shift.is_contiguous(),
              "mmseg_arb: shift must be contiguous float32, one per class");
  if (class_weight.has_value()) {
    TORCH_CHECK(class_weight->scalar_type() == at::kFloat &&
                    class_weight->numel() == C && class_weight->is_cuda() &&
                    class_weight->is_contiguous(),
                "mmseg_arb: class_weight must be contiguous float32 CUDA, ",
                "one per class");
  }
  if (weight.has_value()) {
    TORCH_CHECK(weight->scalar_type() == at::kFloat &&
                    weight->numel() == label.numel() && weight->is_cuda() &&
                    weight->is_contiguous(),
                "mmseg_arb: weight must be contiguous float32 CUDA, one per ",
                "pixel");
  }
  const int64_t S = N == 0 ? 0 : label.numel() / N;
  return {N, C, S};
}

const float* optional_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<float>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> arb_loss_forward(
    const at::Tensor& logits, const at::Tensor& label, const at::Tensor& shift,
    const c10::optional<at::Tensor>& class_weight,
    const c10::optional<at::Tensor>& weight, int64_t ignore_index,
    c10::string_view reduction, double loss_weight, bool avg_non_ignore,
    const c10::optional<at::Tensor>& denominator) {
  const LossShape s =
      check_loss_inputs(logits, label, shift, class_weight, weight);
  if (denominator.has_value()) {
    TORCH_CHECK(denominator->scalar_type() == at::kFloat &&
                    denominator->numel() == 1 && denominator->is_cuda(),
                "mmseg_arb: denominator must be one float32 CUDA value");
  }
  const mmseg_arb::Reduction how = reduction_of(reduction);
  const c10::cuda::CUDAGuard guard(logits.device());
  const auto options = logits.options().dtype(at::kFloat);
  at::Tensor out = how == mmseg_arb::Reduction::kNone
                       ? at::empty(label.sizes(), options)
                       : at::empty({}, options);
  // Per pixel: the largest shifted logit, then the log of the softmax sum.
  std::vector<int64_t> stats_shape{2};
  stats_shape.insert(stats_shape.end(), label.sizes().begin(),
                     label.sizes().end());
  at::Tensor softmax_stats = at::empty(stats_shape, options);
  at::Tensor scale = at::empty({1}, options);
  if (label.numel() == 0) {  // nothing to launch: an empty sum
    if (how != mmseg_arb::Reduction::kNone) out.zero_();
    scale.fill_(loss_weight);
    return {out, softmax_stats, scale};
  }
  const int sms = multiprocessor_count(logits.get_device());
  at::Tensor partials =
      how == mmseg_arb::Reduction::kNone
          ? at::Tensor()
          : at::empty({2 * mmseg_arb::loss_reduce_blocks(label.numel(), sms)},
                      options);
  launch_checked("arb_loss_forward", [&] {
    return mmseg_arb::launch_arb_loss_forward(
        logits.data_ptr(), float_type(logits), label.data_ptr(),
        label_type(label), shift.data_ptr<float>(), optional_ptr(class_weight),
        optional_ptr(weight), s.N, static_cast<int>(s.C), s.S, ignore_index,
        how, static_cast<float>(loss_weight), avg_non_ignore,
        optional_ptr(denominator), out.data_ptr<float>(),
        softmax_stats.data_ptr<float>(),
        partials.defined() ? partials.data_ptr<float>() : nullptr,
        scale.data_ptr<float>(), sms, current_stream());
  });
  return {out, softmax_stats, scale};
}

// A gradient that is one value for every pixel: a scalar's, or a per-pixel
// one that autograd expanded from a scalar (all strides 0).
bool is_one_value(const at::Tensor& grad) {
  if (grad.numel() <= 1) return true;
  for (int64_t d = 0; d < grad.dim(); ++d) {
    if (grad.size(d) > 1 && grad.stride(d) != 0) return false;
  }
  return true;
}

at::Tensor arb_loss_backward(const at::Tensor& grad_loss,
                             const at::Tensor& logits, const at::Tensor& label,
                             const at::Tensor& shift,
                             const c10::optional<at::Tensor>& class_weight,
                             const c10::optional<at::Tensor>& weight,
                             const at::Tensor& softmax_stats,
                             const at::Tensor& scale, int64_t ignore_index) {
  const LossShape s =
      check_loss_inputs(logits, label, shift, class_weight, weight);
  check_cuda(grad_loss, "grad_loss");
  TORCH_CHECK(softmax_stats.scalar_type() == at::kFloat &&
                  softmax_stats.numel() == 2 * label.numel() &&
                  softmax_stats.is_contiguous() && scale.numel() == 1,
              "mmseg_arb: softmax_stats must hold two float32 per pixel, ",
              "scale one");
  const bool scalar = is_one_value(grad_loss);
  TORCH_CHECK(scalar || grad_loss.numel() == label.numel(),
              "mmseg_arb: grad_loss must be a scalar or one per pixel");
  const c10::cuda::CUDAGuard guard(logits.device());
  // Read on the device as it is: only a per-pixel gradient that is not
  // already contiguous float32 is copied.
  const at::Tensor g = grad_loss.scalar_type() == at::kFloat && scalar
                           ? grad_loss
                           : (scalar ? grad_loss.reshape(-1).slice(0, 0, 1)
                                     : grad_loss)
                                 .to(at::kFloat)
                                 .contiguous();
  at::Tensor grad = at::empty_like(logits);
  if (grad.numel() == 0) return grad;
  launch_checked("arb_loss_backward", [&] {
    return mmseg_arb::launch_arb_loss_backward(
        logits.data_ptr(), float_type(logits), label.data_ptr(),
        label_type(label), shift.data_ptr<float>(), optional_ptr(class_weight),
        optional_ptr(weight), softmax_stats.data_ptr<float>(),
        g.data_ptr<float>(), scalar, scale.data_ptr<float>(), s.N,
        static_cast<int>(s.C), s.S, ignore_index, grad.data_ptr(),
        multiprocessor_count(logits.get_device()), current_stream());
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmseg_arb, CUDA, m) {
  m.impl("class_histogram", &class_histogram);
  m.impl("prepare_counts", &prepare_counts);
  m.impl("arb_loss_forward", &arb_loss_forward);
  m.impl("arb_loss_backward", &arb_loss_backward);
}

// A Python module too, so that the built extension imports as
// mmseg_arb._ext (which loads the registrations above).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
