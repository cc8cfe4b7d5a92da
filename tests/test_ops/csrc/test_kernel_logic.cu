// Host test of arb_kernel_logic.cuh: the per-thread logic of the CUDA
// kernels, run on the CPU against exact references. Built and run by
// tests/test_ops/test_kernel_logic.py wherever nvcc exists (no GPU needed).
// Prints one line per failure and exits non-zero if any.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

#include "arb_kernel_logic.cuh"
#include "host_check.h"

namespace {

using namespace mmseg_arb::logic;

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

// Forward and backward of one pixel against float64 references computed
// from the same (rounded) logits.
template <typename F>
void test_pixel(std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  const double rtol = tolerance<F>();
  const int strides[] = {1, 3};
  for (int C = 1; C <= 41; ++C) {
    for (int stride : strides) {
      for (int trial = 0; trial < 6; ++trial) {
        const float scale = trial % 3 == 0 ? 1.f
                            : trial % 3 == 1 ? 30.f : 300.f;
        std::vector<F> z(static_cast<size_t>(C) * stride);
        std::vector<double> zd(C);
        std::vector<float> shift(C), weight(C);
        for (int c = 0; c < C; ++c) {
          z[c * stride] = from_float<F>(normal(rng) * scale);
          zd[c] = to_float(z[c * stride]);
          shift[c] = uniform(rng) < 0.2f  // an absent class
                         ? -1e30f
                         : std::log(1.f + 1e4f * uniform(rng));
          weight[c] = 0.5f + uniform(rng);
        }
        const int target = static_cast<int>(rng() % C);
        shift[target] = std::log(2.f);  // the target's class is present
        const bool weighted = trial % 2 == 1;
        const float* cw = weighted ? weight.data() : nullptr;

        double m = -INFINITY;
        for (int c = 0; c < C; ++c) m = std::fmax(m, zd[c] + shift[c]);
        double sum = 0;
        for (int c = 0; c < C; ++c) sum += std::exp(zd[c] + shift[c] - m);
        const double lse = m + std::log(sum);
        const double w = weighted ? weight[target] : 1.0;
        const double loss = (lse - zd[target] - shift[target]) * w;

        const PixelLoss got = pixel_forward(z.data(), stride, C, shift.data(),
                                            cw, true, target);
        expect(close(got.lse, lse, 1e-6, 1e-6 * (1 + std::fabs(m))), "lse",
               got.lse, lse, C, stride, trial);
        expect(close(got.loss, loss, 1e-5, 1e-5 * (1 + std::fabs(m)) * w),
               "loss", got.loss, loss, C, stride, trial);
        const PixelLoss ignored = pixel_forward(z.data(), stride, C,
                                                shift.data(), cw, false, 0);
        expect(ignored.loss == 0.f && ignored.lse == got.lse,
               "ignored pixel: loss 0, same lse", ignored.loss, 0, C);

        // Backward: gaps between strided entries must stay untouched.
        const float g = 0.25f + uniform(rng);
        const F sentinel = from_float<F>(12345.f);
        std::vector<F> grad(z.size(), sentinel);
        pixel_backward(z.data(), stride, C, shift.data(), cw, got.lse, g,
                       true, target, grad.data());
        for (int c = 0; c < C; ++c) {
          const double p = std::exp(zd[c] + shift[c] - lse);
          const double want = (p - (c == target ? 1.0 : 0.0)) * g * w;
          const double have = to_float(grad[c * stride]);
          // float32 math: exp's argument is off by ~|logit| * eps.
          const double atol = (rtol + 1e-6 * (1 + std::fabs(m))) * g * w;
          expect(close(have, want, rtol, atol), "grad", have, want, C, c,
                 trial);
          for (int k = 1; k < stride; ++k) {
            expect(to_float(grad[c * stride + k]) == to_float(sentinel),
                   "grad leaves gaps", to_float(grad[c * stride + k]),
                   to_float(sentinel), C, c, k);
          }
        }
        std::vector<F> zero(z.size(), sentinel);
        pixel_backward(z.data(), stride, C, shift.data(), cw, got.lse, g,
                       false, 0, zero.data());
        for (int c = 0; c < C; ++c) {
          expect(to_float(zero[c * stride]) == 0.f, "ignored pixel: grad 0",
                 to_float(zero[c * stride]), 0, C, c);
        }
      }
    }
  }
}

// Every class absent but one, and all logits huge: still finite.
void test_extremes() {
  const int C = 19;
  std::vector<float> z(C, 300.f), shift(C, -1e30f);
  shift[4] = 0.f;
  z[4] = -300.f;
  const PixelLoss out = pixel_forward(z.data(), 1, C, shift.data(), nullptr,
                                      true, 4);
  expect(out.loss == 0.f && std::isfinite(out.lse), "only class present",
         out.loss, 0);
  std::vector<float> all_absent(C, -1e30f);
  const PixelLoss none = pixel_forward(z.data(), 1, C, all_absent.data(),
                                       nullptr, false, 0);
  expect(std::isfinite(none.lse) && none.loss == 0.f,
         "every class absent (an all-ignored batch): finite", none.lse, 0);
}

}  // namespace

int main() {
  test_traversal<int64_t>(4096);
  test_traversal<int32_t>(4096);
  test_traversal<uint8_t>(256);
  test_bins();
  std::mt19937 rng(0);
  test_pixel<float>(rng);
  test_pixel<__half>(rng);
  test_pixel<__nv_bfloat16>(rng);
  test_extremes();
  return host_check::finish("kernel logic");
}
