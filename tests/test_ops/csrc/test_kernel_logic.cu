// Host test of arb_kernel_logic.cuh: the per-thread logic of the CUDA
// kernels, run on the CPU against exact references. Built and run by
// tests/test_ops/test_kernel_logic.py wherever nvcc exists (no GPU needed).
// Prints one line per failure and exits non-zero if any.
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

template <typename F>
double tolerance() {
  if (sizeof(F) == 4) return 2e-6;
  return std::is_same<F, __half>::value ? 1e-3 : 8e-3;
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

// Forward and backward of V pixels against float64 references computed
// from the same (rounded) logits, for every class count up to 41 (whole
// chunks and tails), logits up to +-300, absent classes, and pixels whose
// target is not a class (their gradient must be 0).
template <typename F, int V>
void test_pixels(std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  const double rtol = tolerance<F>();
  for (int C = 1; C <= 41; ++C) {
    for (int stride : {V, 2 * V}) {
      for (int trial = 0; trial < 6; ++trial) {
        const float scale = trial % 3 == 0 ? 1.f
                            : trial % 3 == 1 ? 30.f : 300.f;
        Rows<F> rows(C, V, stride);
        std::vector<double> zd(static_cast<size_t>(C) * V);
        std::vector<float> shift(C);
        for (int c = 0; c < C; ++c) {
          shift[c] = uniform(rng) < 0.2f  // an absent class
                         ? kAbsentShift
                         : std::log(1.f + 1e4f * uniform(rng));
          for (int v = 0; v < V; ++v) {
            rows.z[c * stride + v] = from_float<F>(normal(rng) * scale);
            zd[c * V + v] = to_float(rows.z[c * stride + v]);
          }
        }
        int target[V];
        float g[V];
        for (int v = 0; v < V; ++v) {
          target[v] = static_cast<int>(rng() % C);
          shift[target[v]] = std::log(2.f);  // a target's class is present
          // Every third pixel gets no loss (ignored or out of range).
          g[v] = (v + trial) % 3 == 2 ? 0.f : 0.25f + uniform(rng);
        }
        float lse[V], zs[V];
        forward_pixels<V>(rows.z, stride, C, shift.data(), target, lse, zs);
        const F sentinel = from_float<F>(12345.f);
        Rows<F> grad(C, V, stride);
        for (auto& x : grad.data) x = sentinel;
        backward_pixels<V>(rows.z, stride, C, shift.data(), target, lse, g,
                           grad.z);
        for (int v = 0; v < V; ++v) {
          double m = -INFINITY;
          for (int c = 0; c < C; ++c) {
            m = std::fmax(m, zd[c * V + v] + shift[c]);
          }
          double sum = 0;
          for (int c = 0; c < C; ++c) {
            sum += std::exp(zd[c * V + v] + shift[c] - m);
          }
          const double want_lse = m + std::log(sum);
          const double want_zs = zd[target[v] * V + v] + shift[target[v]];
          expect(close(lse[v], want_lse, 1e-6, 2e-6 * (1 + std::fabs(m))),
                 "lse", lse[v], want_lse, C, v, trial);
          expect(close(zs[v], want_zs, 1e-6, 1e-6 * (1 + std::fabs(m))),
                 "target logit", zs[v], want_zs, C, v, trial);
          for (int c = 0; c < C; ++c) {
            const double p = std::exp(zd[c * V + v] + shift[c] - want_lse);
            const double want = (p - (c == target[v] ? 1.0 : 0.0)) * g[v];
            const double have = to_float(grad.z[c * stride + v]);
            // float32 math: exp's argument is off by ~|logit| * eps.
            const double atol = (rtol + 2e-6 * (1 + std::fabs(m))) * g[v];
            expect(g[v] == 0.f ? have == 0.0 : close(have, want, rtol, atol),
                   "grad", have, want, C, c, v);
          }
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
}

// Every class absent but one, and all logits huge: still finite; every
// class absent (an all-ignored batch): finite, zero gradient.
void test_extremes() {
  const int C = 19;
  Rows<float> rows(C, 1, 1);
  std::vector<float> shift(C, kAbsentShift), all_absent(C, kAbsentShift);
  for (int c = 0; c < C; ++c) rows.z[c] = 300.f;
  shift[4] = 0.f;
  rows.z[4] = -300.f;
  const int target[1] = {4};
  float lse[1], zs[1];
  forward_pixels<1>(rows.z, 1, C, shift.data(), target, lse, zs);
  expect(lse[0] - zs[0] == 0.f, "only class present", lse[0] - zs[0], 0);
  forward_pixels<1>(rows.z, 1, C, all_absent.data(), target, lse, zs);
  expect(std::isfinite(lse[0]), "every class absent: finite", lse[0], 0);
  const float g[1] = {0.f};
  Rows<float> grad(C, 1, 1);
  backward_pixels<1>(rows.z, 1, C, all_absent.data(), target, lse, g,
                     grad.z);
  for (int c = 0; c < C; ++c) {
    expect(grad.z[c] == 0.f, "no loss, no gradient", grad.z[c], 0, c);
  }
  // -inf logits (masked out by a model) in the first chunk and the tail:
  // they add exp(-inf) = 0, as in F.cross_entropy, and no NaN.
  std::vector<float> zero_shift(C, 0.f);
  for (int c = 0; c < C; ++c) rows.z[c] = c < 5 || c == C - 1 ? -INFINITY : 0.f;
  const int finite_target[1] = {7};
  forward_pixels<1>(rows.z, 1, C, zero_shift.data(), finite_target, lse, zs);
  const double want = std::log(C - 6.0);
  expect(close(lse[0], want, 1e-6, 1e-6), "-inf logits drop out", lse[0],
         want);
}

// A pixel's part of the reduced loss and of mmseg's mean denominator.
void test_terms() {
  const PixelTerms labelled = pixel_terms(true, 5.f, 3.f, 2.f, 0.5f, true);
  expect(labelled.loss == 2.f && labelled.denominator == 2.f,
         "labelled pixel", labelled.loss, 2.f);
  const PixelTerms ignored = pixel_terms(false, 5.f, 3.f, 2.f, 0.5f, false);
  expect(ignored.loss == 0.f && ignored.denominator == 1.f,
         "ignored pixel counts 1", ignored.denominator, 1.f);
  const PixelTerms ignored_non = pixel_terms(false, 5.f, 3.f, 2.f, 0.5f,
                                             true);
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

}  // namespace

int main() {
  test_traversal<int64_t>(4096);
  test_traversal<int32_t>(4096);
  test_traversal<uint8_t>(256);
  test_bins();
  std::mt19937 rng(0);
  test_pixels<float, 1>(rng);
  test_pixels<float, 4>(rng);
  test_pixels<__half, 1>(rng);
  test_pixels<__half, 8>(rng);
  test_pixels<__nv_bfloat16, 8>(rng);
  test_extremes();
  test_terms();
  test_counts();
  return host_check::finish("kernel logic");
}
