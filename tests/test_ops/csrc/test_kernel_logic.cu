// Host test of arb_kernel_logic.cuh: the per-thread logic of the CUDA
// kernels, run on the CPU against exact references. Built and run by
// tests/test_ops/test_kernel_logic.py wherever nvcc exists (no GPU needed).
// Prints one line per failure and exits non-zero if any.
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

#include "arb_kernel_logic.cuh"
#include "host_check.h"

namespace {

using namespace mmseg_arb::logic;
using mmseg_arb::CountMode;

void expect(bool ok, const char* what, double got, double want, int a = -1,
            int b = -1, int c = -1) {
  if (host_check::tally(ok)) {
    std::printf("FAIL %s: got %.9g want %.9g (%d %d %d)\n", what, got, want,
                a, b, c);
  }
}

bool close(double got, double want, double rtol, double atol) {
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

// Every label is visited exactly once, for any alignment, length and
// number of threads.
template <typename T>
void test_traversal(int max_n) {
  alignas(16) static unsigned char storage[16 * 4096];
  const int per_vec = 16 / sizeof(T);
  const int lengths[] = {0, 1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 100, 255, 256,
                         1000, 2049};
  const int threads[] = {1, 2, 3, 5, 32, 64, 257, 4096};
  for (int offset = 0; offset < per_vec; ++offset) {
    T* labels = reinterpret_cast<T*>(storage) + offset;
    for (int n : lengths) {
      if (n > max_n) continue;
      for (int i = 0; i < n; ++i) labels[i] = static_cast<T>(i);
      for (int num_threads : threads) {
        std::vector<int> seen(n, 0);
        for (int tid = 0; tid < num_threads; ++tid) {
          for_each_owned_label(labels, n, tid, num_threads, [&](T v) {
            const long long i = static_cast<long long>(v);
            if (i >= 0 && i < n) ++seen[i];
          });
        }
        for (int i = 0; i < n; ++i) {
          expect(seen[i] == 1, "traversal visits once", seen[i], 1,
                 static_cast<int>(sizeof(T)), offset, n);
        }
      }
    }
  }
}

void test_bins() {
  expect(bin_of<int64_t>(3, 19, 255) == 3, "bin of a class", 0, 0);
  expect(bin_of<int64_t>(255, 19, 255) == -1, "ignored", 0, 0);
  expect(bin_of<int64_t>(19, 19, 255) == 19, "too large", 0, 0);
  expect(bin_of<int64_t>(-1, 19, 255) == 19, "negative", 0, 0);
  expect(bin_of<int32_t>(-1, 19, -1) == -1, "ignore -1", 0, 0);
  expect(bin_of<int64_t>(5, 19, 5) == -1, "ignore inside the range", 0, 0);
  expect(bin_of<uint8_t>(255, 150, 255) == -1, "uint8 ignore", 0, 0);
  expect(bin_of<uint8_t>(200, 150, 255) == 150, "uint8 too large", 0, 0);
  expect(bin_of<int64_t>(int64_t(1) << 40, 19, 255) == 19, "huge", 0, 0);
}

// The C logits of V consecutive pixels, row c at c * stride (stride >= V;
// the entries between rows are gaps the backward must leave untouched),
// aligned as the kernels' vector loads require.
template <typename F>
struct Rows {
  int C, V, stride;
  std::vector<F, std::allocator<F>> data;
  F* z;
  Rows(int C_, int V_, int stride_)
      : C(C_), V(V_), stride(stride_), data(C_ * stride_ + 16) {
    z = data.data();
    while (reinterpret_cast<uintptr_t>(z) % 16 != 0) ++z;
  }
};

// The largest errors against float64 of a batch of pixels: of the loss and
// of the gradient.
struct Errors {
  double loss = 0, grad = 0;
  void add(double loss_error, double grad_error) {
    loss = std::fmax(loss, loss_error);
    grad = std::fmax(grad, grad_error);
  }
};

// Cross-entropy of one pixel as PyTorch computes it in float32 on the
// shifted logits: x = fl(z + shift), m = max x, s = sum exp(x - m),
// log_softmax = (x - m) - log s, loss = -log_softmax[t], grad = (exp(
// log_softmax) - onehot) * g, rounded to the logits' type.
template <typename F>
void pytorch_float32_ce(const std::vector<float>& z, const float* shift,
                        int target, float g, float* loss,
                        std::vector<double>* grad) {
  const int C = static_cast<int>(z.size());
  std::vector<float> x(C);
  float m = -INFINITY;
  for (int c = 0; c < C; ++c) {
    x[c] = z[c] + shift[c];
    m = std::fmax(m, x[c]);
  }
  float sum = 0.f;
  for (int c = 0; c < C; ++c) sum += std::exp(x[c] - m);
  const float log_sum = std::log(sum);
  *loss = -((x[target] - m) - log_sum);
  grad->resize(C);
  for (int c = 0; c < C; ++c) {
    const float p = std::exp((x[c] - m) - log_sum);
    (*grad)[c] = to_float(from_float<F>((p - (c == target ? 1.f : 0.f)) * g));
  }
}

// Forward and backward of V pixels against float64 references computed
// from the same (rounded) logits, for every class count up to 41 (whole
// chunks and tails), absent classes (shift -1e30), shifts from count
// ratios up to 1e5 : 1, and pixels whose target is not a class (their
// gradient must be 0). The standard is what users already trust: at each
// logit scale the largest error may be at most 3x (+1e-6) that of fp32
// cross-entropy computed as PyTorch does, measured here on the same
// pixels; and no loss is ever below zero.
template <typename F, int V>
void test_pixels(const char* type, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  for (const float scale : {1.f, 20.f, 100.f, 300.f}) {
    Errors ours, pytorch;
    long negative = 0;
    for (int C = 1; C <= 41; ++C) {
      for (int stride : {V, 2 * V}) {
        for (int trial = 0; trial < 12; ++trial) {
          Rows<F> rows(C, V, stride);
          std::vector<double> zd(static_cast<size_t>(C) * V);
          std::vector<float> shift(C);
          for (int c = 0; c < C; ++c) {
            shift[c] = uniform(rng) < 0.2f  // an absent class
                           ? kAbsentShift
                           : std::log(1.f + 1e5f * uniform(rng));
            for (int v = 0; v < V; ++v) {
              rows.z[c * stride + v] = from_float<F>(normal(rng) * scale);
              zd[c * V + v] = to_float(rows.z[c * stride + v]);
            }
          }
          int target[V];
          float g[V];
          for (int v = 0; v < V; ++v) {
            target[v] = static_cast<int>(rng() % C);
            shift[target[v]] = std::log(1.f + 1e5f * uniform(rng));
          }
          for (int v = 0; v < V; ++v) {
            // Every third pixel gets no loss (ignored or out of range).
            g[v] = (v + trial) % 3 == 2 ? 0.f : 0.25f + uniform(rng);
          }
          SoftmaxStats stats[V];
          float shifted_target[V];
          forward_pixels<V>(rows.z, stride, C, shift.data(), target, stats,
                            shifted_target);
          const F sentinel = from_float<F>(12345.f);
          Rows<F> grad(C, V, stride);
          for (auto& x : grad.data) x = sentinel;
          backward_pixels<V>(rows.z, stride, C, shift.data(), target, stats,
                             g, grad.z);
          for (int v = 0; v < V; ++v) {
            double m = -INFINITY;
            for (int c = 0; c < C; ++c) {
              m = std::fmax(m, zd[c * V + v] + shift[c]);
            }
            double sum = 0;
            for (int c = 0; c < C; ++c) {
              sum += std::exp(zd[c * V + v] + shift[c] - m);
            }
            const double lse = m + std::log(sum);
            const double want_loss =
                lse - (zd[target[v] * V + v] + shift[target[v]]);
            const float loss = pixel_loss(stats[v], shifted_target[v]);
            negative += loss < 0.f;
            std::vector<float> z(C);
            for (int c = 0; c < C; ++c) z[c] = zd[c * V + v];
            float torch_loss;
            std::vector<double> torch_grad;
            pytorch_float32_ce<F>(z, shift.data(), target[v], g[v],
                                  &torch_loss, &torch_grad);
            double grad_error = 0, torch_grad_error = 0;
            for (int c = 0; c < C; ++c) {
              const double p = std::exp(zd[c * V + v] + shift[c] - lse);
              const double want = (p - (c == target[v] ? 1.0 : 0.0)) * g[v];
              const double have = to_float(grad.z[c * stride + v]);
              if (g[v] == 0.f) {
                expect(have == 0.0, "no loss, no gradient", have, 0, C, c);
              }
              grad_error = std::fmax(grad_error, std::fabs(have - want));
              torch_grad_error =
                  std::fmax(torch_grad_error, std::fabs(torch_grad[c] - want));
            }
            ours.add(std::fabs(loss - want_loss), grad_error);
            pytorch.add(std::fabs(torch_loss - want_loss), torch_grad_error);
          }
          for (int c = 0; c < C; ++c) {
            for (int k = V; k < stride; ++k) {
              expect(to_float(grad.z[c * stride + k]) == to_float(sentinel),
                     "grad leaves gaps", to_float(grad.z[c * stride + k]),
                     to_float(sentinel), C, c, k);
            }
          }
        }
      }
    }
    std::printf("%s V=%d logits x%g: loss error %.3g (fp32 CE %.3g), "
                "grad error %.3g (fp32 CE %.3g)\n",
                type, V, scale, ours.loss, pytorch.loss, ours.grad,
                pytorch.grad);
    expect(negative == 0, "no loss below zero", negative, 0, V);
    expect(ours.loss <= 3 * pytorch.loss + 1e-6,
           "loss error within 3x of fp32 CE", ours.loss, pytorch.loss, V);
    expect(ours.grad <= 3 * pytorch.grad + 1e-6,
           "grad error within 3x of fp32 CE", ours.grad, pytorch.grad, V);
  }
}

// Every class absent but one, and all logits huge: still finite; every
// class absent (an all-ignored batch): finite, zero gradient; fp32 logits
// near FLT_MAX: as finite as in PyTorch.
void test_extremes() {
  const int C = 19;
  Rows<float> rows(C, 1, 1);
  std::vector<float> shift(C, kAbsentShift), all_absent(C, kAbsentShift);
  for (int c = 0; c < C; ++c) rows.z[c] = 300.f;
  shift[4] = 0.f;
  rows.z[4] = -300.f;
  const int target[1] = {4};
  SoftmaxStats stats[1];
  float xt[1];
  forward_pixels<1>(rows.z, 1, C, shift.data(), target, stats, xt);
  expect(pixel_loss(stats[0], xt[0]) == 0.f, "only class present",
         pixel_loss(stats[0], xt[0]), 0);
  forward_pixels<1>(rows.z, 1, C, all_absent.data(), target, stats, xt);
  expect(std::isfinite(stats[0].max) && std::isfinite(stats[0].log_sum),
         "every class absent: finite", stats[0].max, 0);
  const float g[1] = {0.f};
  Rows<float> grad(C, 1, 1);
  backward_pixels<1>(rows.z, 1, C, all_absent.data(), target, stats, g,
                     grad.z);
  for (int c = 0; c < C; ++c) {
    expect(grad.z[c] == 0.f, "no loss, no gradient", grad.z[c], 0, c);
  }
  // -inf logits (masked out by a model) in the first chunk and the tail:
  // they add exp(-inf) = 0, as in F.cross_entropy, and no NaN.
  std::vector<float> zero_shift(C, 0.f);
  for (int c = 0; c < C; ++c) rows.z[c] = c < 5 || c == C - 1 ? -INFINITY : 0.f;
  const int finite_target[1] = {7};
  forward_pixels<1>(rows.z, 1, C, zero_shift.data(), finite_target, stats,
                    xt);
  const double want = std::log(C - 6.0);
  expect(close(pixel_loss(stats[0], xt[0]), want, 1e-6, 1e-6),
         "-inf logits drop out", pixel_loss(stats[0], xt[0]), want);
  // Logits of 3e38: no scaling of the logits themselves (only of their
  // differences), so nothing overflows that PyTorch keeps finite.
  for (int c = 0; c < C; ++c) rows.z[c] = c == 7 ? 3e38f : -3e38f;
  forward_pixels<1>(rows.z, 1, C, zero_shift.data(), finite_target, stats,
                    xt);
  expect(pixel_loss(stats[0], xt[0]) == 0.f, "huge logits",
         pixel_loss(stats[0], xt[0]), 0);
  const float one[1] = {1.f};
  backward_pixels<1>(rows.z, 1, C, zero_shift.data(), finite_target, stats,
                     one, grad.z);
  for (int c = 0; c < C; ++c) {
    expect(grad.z[c] == 0.f, "huge logits: exact gradient", grad.z[c], 0, c);
  }
}

// A pixel's part of the reduced loss and of mmseg's mean denominator.
void test_terms() {
  const PixelTerms labelled = pixel_terms(true, 2.f, 2.f, 0.5f, true);
  expect(labelled.loss == 2.f && labelled.denominator == 2.f,
         "labelled pixel", labelled.loss, 2.f);
  const PixelTerms ignored = pixel_terms(false, 2.f, 2.f, 0.5f, false);
  expect(ignored.loss == 0.f && ignored.denominator == 1.f,
         "ignored pixel counts 1", ignored.denominator, 1.f);
  const PixelTerms ignored_non = pixel_terms(false, 2.f, 2.f, 0.5f, true);
  expect(ignored_non.denominator == 0.f, "avg_non_ignore: ignored counts 0",
         ignored_non.denominator, 0.f);
}

// The prepare step's per-class logic against its PyTorch twin's formulas.
void test_counts() {
  expect(updated_count(CountMode::kBatch, 5, 7, 0.1) == 7, "batch", 0, 0);
  expect(updated_count(CountMode::kCumulative, 5, 7, 0.1) == 12,
         "cumulative", 0, 0);
  expect(close(updated_count(CountMode::kEma, 5, 7, 0.1), 5.2, 1e-15, 0),
         "ema", updated_count(CountMode::kEma, 5, 7, 0.1), 5.2);
  expect(updated_count(CountMode::kPrior, 5, 7, 0.1) == 5, "prior", 0, 0);
  expect(log_count_shift(10.0, 0.0, 1.0) == static_cast<float>(std::log(10.0)),
         "log n", log_count_shift(10.0, 0.0, 1.0), std::log(10.0));
  expect(log_count_shift(0.0, 0.0, 1.0) == kAbsentShift, "absent", 0, 0);
  expect(log_count_shift(0.0, 0.5, 1.0) == static_cast<float>(std::log(0.5)),
         "smoothing", log_count_shift(0.0, 0.5, 1.0), std::log(0.5));
  expect(log_count_shift(0.0, 0.0, 0.0) == 0.f, "tau 0: CE", 0, 0);
  expect(log_count_shift(8.0, 0.0, 0.5) ==
             static_cast<float>(0.5 * std::log(8.0)),
         "tau", log_count_shift(8.0, 0.0, 0.5), 0.5 * std::log(8.0));
}

// Address space for an array of more than 2^31 elements without its
// memory: pages become usable (and take memory) only where `at` opens
// them, so a test pays for the few pages it reads and writes. Every other
// page faults, so an index that wraps at 32 bits crashes the test or reads
// another value.
class Sparse {
 public:
  explicit Sparse(size_t bytes) : bytes_(bytes) {
    void* base = mmap(nullptr, bytes, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
      std::printf("FAIL no %zu bytes of address space for the 64-bit index "
                  "tests\n", bytes);
      std::exit(1);
    }
    base_ = static_cast<char*>(base);
  }
  ~Sparse() { munmap(base_, bytes_); }
  // `count` Ts from byte `offset` on, readable and writable.
  template <typename T>
  T* at(size_t offset, size_t count) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t start = offset / page * page;
    const size_t end = (offset + count * sizeof(T) + page - 1) / page * page;
    mprotect(base_ + start, end - start, PROT_READ | PROT_WRITE);
    return reinterpret_cast<T*>(base_ + offset);
  }
  template <typename T>
  T* base() const { return reinterpret_cast<T*>(base_); }

 private:
  char* base_;
  size_t bytes_;
};

constexpr int64_t k2To31 = int64_t(1) << 31;

// The loss of V pixels whose class rows lie 2^31 + 16 elements apart (the
// spatial size of a 2^31-pixel image) equals that of the same logits
// packed, forward and backward, exactly.
template <typename F, int V>
void test_strides_past_2_31(const char* type) {
  const int C = 3;
  const int64_t stride = k2To31 + 16;
  const size_t bytes = C * stride * sizeof(F);
  Sparse logits(bytes), grads(bytes);
  Rows<F> packed(C, V, V), packed_grad(C, V, V);
  const float shift[C] = {0.5f, -1.f, 2.f};
  int target[V];
  float g[V];
  for (int c = 0; c < C; ++c) {
    F* row = logits.at<F>(c * stride * sizeof(F), V);
    grads.at<F>(c * stride * sizeof(F), V);
    for (int v = 0; v < V; ++v) {
      row[v] = packed.z[c * V + v] = from_float<F>(0.25f * (c + 1) * (v - 2));
    }
  }
  for (int v = 0; v < V; ++v) {
    target[v] = v % C;
    g[v] = 0.5f + v;
  }
  SoftmaxStats stats[V], want_stats[V];
  float shifted[V], want_shifted[V];
  forward_pixels<V>(logits.base<F>(), stride, C, shift, target, stats,
                    shifted);
  forward_pixels<V>(packed.z, V, C, shift, target, want_stats, want_shifted);
  backward_pixels<V>(logits.base<F>(), stride, C, shift, target, stats, g,
                     grads.base<F>());
  backward_pixels<V>(packed.z, V, C, shift, target, want_stats, g,
                     packed_grad.z);
  for (int v = 0; v < V; ++v) {
    expect(stats[v].max == want_stats[v].max &&
               stats[v].log_sum == want_stats[v].log_sum &&
               shifted[v] == want_shifted[v],
           type, pixel_loss(stats[v], shifted[v]),
           pixel_loss(want_stats[v], want_shifted[v]), V, v);
    for (int c = 0; c < C; ++c) {
      const double got = to_float(grads.base<F>()[c * stride + v]);
      const double want = to_float(packed_grad.z[c * V + v]);
      expect(got == want, type, got, want, V, v, c);
    }
  }
}

// The labels a thread reads and checks past index 2^31: the vector loads,
// the scalar tail and a pixel's target.
template <typename T>
void test_labels_past_2_31(const char* type) {
  constexpr int kVec = 16 / sizeof(T);
  const int64_t n = k2To31 + kVec + 1;  // one label in the scalar tail
  const int64_t num_vec = n / kVec;
  Sparse memory(n * sizeof(T));
  T* first = memory.at<T>(0, kVec);
  T* last = memory.at<T>((n - 1 - kVec) * sizeof(T), kVec + 1);
  for (int k = 0; k < kVec; ++k) first[k] = static_cast<T>(k);
  for (int k = 0; k <= kVec; ++k) last[k] = static_cast<T>(k % 100 + 1);
  const T* labels = memory.base<T>();
  // With num_vec threads: thread 0 reads the first vector and the tail
  // label, thread num_vec - 1 the last vector, past 2^31.
  std::vector<long long> seen;
  auto collect = [&](T v) { seen.push_back(static_cast<long long>(v)); };
  for_each_owned_label(labels, n, num_vec - 1, num_vec, collect);
  std::vector<long long> want;
  for (int k = 0; k < kVec; ++k) want.push_back(k % 100 + 1);
  expect(seen == want, type, seen.empty() ? -1 : seen[0], want[0],
         static_cast<int>(seen.size()), kVec);
  seen.clear();
  for_each_owned_label(labels, n, 0, num_vec, collect);
  want.clear();
  for (int k = 0; k < kVec; ++k) want.push_back(k);
  want.push_back(kVec % 100 + 1);
  expect(seen == want, type, seen.empty() ? -1 : seen.back(), want.back(),
         static_cast<int>(seen.size()), kVec + 1);
  int target = -1;
  const bool valid = valid_target(labels, n - 1, 19, 255, &target);
  expect(valid && target == kVec % 100 + 1, type, target, kVec % 100 + 1);
}

}  // namespace

int main() {
  test_traversal<int64_t>(4096);
  test_traversal<int32_t>(4096);
  test_traversal<uint8_t>(256);
  test_bins();
  std::mt19937 rng(0);
  test_pixels<float, 1>("fp32", rng);
  test_pixels<float, 4>("fp32", rng);
  test_pixels<__half, 1>("fp16", rng);
  test_pixels<__half, 8>("fp16", rng);
  test_pixels<__nv_bfloat16, 8>("bf16", rng);
  test_extremes();
  test_terms();
  test_counts();
  test_strides_past_2_31<float, 4>("fp32 rows 2^31 apart");
  test_strides_past_2_31<float, 1>("fp32 rows 2^31 apart, scalar");
  test_strides_past_2_31<__nv_bfloat16, 8>("bf16 rows 2^31 apart");
  test_labels_past_2_31<uint8_t>("uint8 labels past 2^31");
  test_labels_past_2_31<int64_t>("int64 labels past 2^31");
  return host_check::finish("kernel logic");
}
