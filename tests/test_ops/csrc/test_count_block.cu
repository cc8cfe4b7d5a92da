// Host test of the count kernel's block logic (logic::count_block and
// logic::plan_count in arb_kernel_logic.cuh): every thread of every block of
// the planned grid runs as a host thread, __syncthreads is a barrier, and
// __match_any_sync is emulated at both ends of what the hardware may do:
//   converged: the lanes of a warp meet at each call and each lane gets the
//              lanes that passed the same value (full warp aggregation);
//   diverged:  each lane runs alone and gets only itself, a legal
//              __activemask() result under independent thread scheduling.
// The counts must equal a reference histogram in both. Built and run by
// tests/test_ops/test_kernel_logic.py, once plainly and once under
// ThreadSanitizer, which reports any shared-memory access that a missing
// barrier would leave unordered. Prints one line per failure and exits
// non-zero if any.
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "arb_kernel_logic.cuh"
#include "host_check.h"

namespace {

using namespace mmseg_arb::logic;

void expect(bool ok, const char* what, long long got, long long want,
            const char* type, int num_classes, int64_t n) {
  if (host_check::tally(ok)) {
    std::printf("FAIL %s: got %lld want %lld (%s, C=%d, n=%lld)\n", what, got,
                want, type, num_classes, static_cast<long long>(n));
  }
}

using host_check::Barrier;  // __syncthreads for the threads of a block

// __match_any_sync for converged lanes: each call waits until every lane of
// the warp has either called too or left the label loop, then each caller
// gets the callers that passed its value.
class WarpMatch {
 public:
  unsigned int match(int lane, int value) {
    std::unique_lock<std::mutex> lock(mutex_);
    values_[lane] = value;
    waiting_ |= 1u << lane;
    const long round = round_;
    if (!complete_round()) {
      changed_.wait(lock, [&] { return round_ != round; });
    }
    return peers_[lane];
  }
  // A lane waiting at a barrier, or exited, is not among the callers.
  void leave(int lane) {
    std::lock_guard<std::mutex> lock(mutex_);
    left_ |= 1u << lane;
    complete_round();
  }
  void rejoin(int lane) {
    std::lock_guard<std::mutex> lock(mutex_);
    left_ &= ~(1u << lane);
  }

 private:
  bool complete_round() {
    if (waiting_ == 0 || (waiting_ | left_) != 0xffffffffu) return false;
    for (int a = 0; a < kWarp; ++a) {
      if (!(waiting_ >> a & 1u)) continue;
      unsigned int peers = 0;
      for (int b = 0; b < kWarp; ++b) {
        if ((waiting_ >> b & 1u) && values_[b] == values_[a]) peers |= 1u << b;
      }
      peers_[a] = peers;
    }
    waiting_ = 0;
    ++round_;
    changed_.notify_all();
    return true;
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  int values_[kWarp] = {};
  unsigned int peers_[kWarp] = {};
  unsigned int waiting_ = 0, left_ = 0;
  long round_ = 0;
};

// The host side of count_block's Block: one emulated CUDA thread.
struct HostThread {
  int thread_index, block_threads;
  int64_t block_index, grid_blocks;
  Barrier* barrier;
  WarpMatch* warp;  // null: lanes diverged

  int thread() const { return thread_index; }
  int threads() const { return block_threads; }
  int lane() const { return thread_index % kWarp; }
  int64_t global_thread() const {
    return block_index * block_threads + thread_index;
  }
  int64_t grid_threads() const { return grid_blocks * block_threads; }
  void sync() const {
    if (warp != nullptr) warp->leave(lane());
    barrier->wait();
    if (warp != nullptr) warp->rejoin(lane());
  }
  unsigned int match_any(int value) const {
    return warp != nullptr ? warp->match(lane(), value) : 1u << lane();
  }
  template <typename C>
  void atomic_add(C* address, C value) const {
    __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
  }
  void atomic_max(unsigned long long* address,
                  unsigned long long value) const {
    unsigned long long seen = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (seen < value &&
           !__atomic_compare_exchange_n(address, &seen, value, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
  }
};

// Runs the planned grid with one host thread per CUDA thread.
template <typename T>
std::vector<unsigned long long> run_grid(const T* labels, int64_t n,
                                         int num_classes,
                                         long long ignore_index,
                                         const CountPlan& plan,
                                         bool converged) {
  std::vector<unsigned long long> out(num_classes + 3, 0ull);
  const bool shared = plan.replicas > 0;
  std::vector<std::vector<unsigned int>> shared_memory(plan.blocks);
  std::vector<std::unique_ptr<Barrier>> barriers;
  std::vector<std::unique_ptr<WarpMatch>> warps;
  std::vector<std::thread> threads;
  for (int64_t b = 0; b < plan.blocks; ++b) {
    // Garbage, as uninitialised shared memory would be.
    shared_memory[b].assign(plan.shared_bytes / 4, 0xA5A5A5A5u);
    barriers.push_back(std::make_unique<Barrier>(kCountThreads));
    for (int w = 0; w < kCountThreads / kWarp; ++w) {
      warps.push_back(converged ? std::make_unique<WarpMatch>() : nullptr);
    }
  }
  for (int64_t b = 0; b < plan.blocks; ++b) {
    for (int t = 0; t < kCountThreads; ++t) {
      threads.emplace_back([&, b, t] {
        const HostThread self{
            t, kCountThreads, b, plan.blocks, barriers[b].get(),
            warps[b * (kCountThreads / kWarp) + t / kWarp].get()};
        if (shared) {
          count_block<true>(self, labels, n, num_classes, ignore_index,
                            plan.replicas, shared_memory[b].data(),
                            out.data());
        } else {
          count_block<false>(self, labels, n, num_classes, ignore_index,
                             plan.replicas, nullptr, out.data());
        }
        if (self.warp != nullptr) self.warp->leave(self.lane());
      });
    }
  }
  for (auto& thread : threads) thread.join();
  return out;
}

template <typename T>
void test_grid(const char* type, int num_classes, int64_t n, int offset,
               long long ignore_index, bool converged, std::mt19937& rng) {
  std::vector<T> storage(n + 16);
  T* labels = storage.data() + offset;
  // Counts, bad labels, the largest bad label above the range and minus
  // the smallest below zero.
  std::vector<unsigned long long> want(num_classes + 3, 0ull);
  const long long max_label = static_cast<long long>(
      std::numeric_limits<T>::max() < num_classes + 5
          ? std::numeric_limits<T>::max()
          : num_classes + 5);
  std::uniform_int_distribution<long long> any(
      std::is_signed<T>::value ? -3 : 0, max_label);
  std::uniform_int_distribution<int> pick(0, 9);
  for (int64_t i = 0; i < n; ++i) {
    const int kind = pick(rng);
    // A dominant class, so that converged lanes merge, plus every kind of
    // label: any class, ignored, out of range.
    const long long v = kind < 5 ? 0 : kind == 5 ? ignore_index : any(rng);
    labels[i] = static_cast<T>(v);
    const int bin = bin_of(labels[i], num_classes, ignore_index);
    if (bin >= 0) ++want[bin];
    const long long value = static_cast<long long>(labels[i]);
    if (bin == num_classes && value >= num_classes) {
      want[num_classes + 1] = std::max<unsigned long long>(
          want[num_classes + 1], static_cast<unsigned long long>(value));
    } else if (bin == num_classes) {
      // -INT64_MIN reads as -INT64_MAX (see AddLabel::note_bad_label).
      const long long negated = value == std::numeric_limits<long long>::min()
                                    ? std::numeric_limits<long long>::max()
                                    : -value;
      want[num_classes + 2] = std::max<unsigned long long>(
          want[num_classes + 2], static_cast<unsigned long long>(negated));
    }
  }
  const CountPlan plan = plan_count(n, sizeof(T), num_classes, 1);
  const auto got =
      run_grid(labels, n, num_classes, ignore_index, plan, converged);
  for (int c = 0; c <= num_classes + 2; ++c) {
    expect(got[c] == want[c], converged ? "converged count" : "diverged count",
           static_cast<long long>(got[c]), static_cast<long long>(want[c]),
           type, num_classes, n);
  }
}

void test_plan() {
  // Shared histograms while C + 1 counters fit in 48 KB, replicas capped at
  // one per warp, global atomics beyond.
  const int classes[] = {1, 19, 150, 1024, 2000, 6000, 12287, 12288, 20000};
  for (int c : classes) {
    const CountPlan plan = plan_count(1 << 20, 8, c, 132);
    const int64_t hist = int64_t(c + 1) * 4;
    const bool fits = hist <= kSharedBudget;
    expect(fits == (plan.replicas > 0), "shared iff it fits", plan.replicas,
           fits, "plan", c, 1 << 20);
    expect(plan.replicas <= kCountThreads / kWarp, "replicas capped",
           plan.replicas, kCountThreads / kWarp, "plan", c, 1 << 20);
    expect(plan.shared_bytes == plan.replicas * hist &&
               plan.shared_bytes <= kSharedBudget,
           "shared bytes", plan.shared_bytes, plan.replicas * hist, "plan", c,
           1 << 20);
  }
  // Enough blocks to fill the device (4 per SM), no more than the labels
  // need, and never so few that a 32-bit shared counter could overflow.
  expect(plan_count(8 << 20, 8, 150, 132).blocks == 528, "4 blocks per SM",
         plan_count(8 << 20, 8, 150, 132).blocks, 528, "plan", 150, 8 << 20);
  expect(plan_count(1000, 1, 19, 132).blocks == 1, "one block for few labels",
         plan_count(1000, 1, 19, 132).blocks, 1, "plan", 19, 1000);
  expect(plan_count(1, 8, 19, 0).blocks == 1, "no SM count", 0, 1, "plan",
         19, 1);
  const int64_t huge = int64_t(1) << 40;
  const CountPlan plan = plan_count(huge, 1, 19, 1);
  expect(plan.blocks * kMaxLabelsPerBlock >= huge, "no counter overflow",
         plan.blocks, huge / kMaxLabelsPerBlock, "plan", 19, huge);
}

// All shared-memory layouts (8, 6, 2 and 1 replicas) and global atomics;
// `races` (the ThreadSanitizer run, where each emulated thread is costly):
// one of each kind, over several grid strides.
template <typename T>
void test_type(const char* type, bool races, std::mt19937& rng) {
  const std::vector<int> classes =
      races ? std::vector<int>{19, 6000, 20000}
            : std::vector<int>{19, 150, 2000, 6000, 12287, 12288, 20000};
  const std::vector<int64_t> lengths =
      races ? std::vector<int64_t>{9000} : std::vector<int64_t>{1, 777, 9000};
  for (int c : classes) {
    for (int64_t n : lengths) {
      for (bool converged : {true, false}) {
        const int offset = static_cast<int>(n % (16 / sizeof(T)));
        test_grid<T>(type, c, n, offset, 255, converged, rng);
      }
    }
  }
  if (std::is_signed<T>::value && !races) {
    test_grid<T>(type, 19, 5000, 1, -1, true, rng);
  }
}

// The most negative int64 label: its extreme must stay a non-negative
// int64 (the running totals compare signed), -INT64_MAX.
void test_int64_min() {
  std::vector<int64_t> labels(64, 2);
  labels[17] = std::numeric_limits<int64_t>::min();
  labels[40] = -5;
  const CountPlan plan = plan_count(64, 8, 19, 1);
  const auto got = run_grid(labels.data(), 64, 19, 255, plan, true);
  const auto int64_max =
      static_cast<unsigned long long>(std::numeric_limits<int64_t>::max());
  expect(got[21] == int64_max, "INT64_MIN reads as -INT64_MAX",
         static_cast<long long>(got[21]), static_cast<long long>(int64_max),
         "int64", 19, 64);
  expect(got[19] == 2, "two bad labels", static_cast<long long>(got[19]), 2,
         "int64", 19, 64);
}

}  // namespace

int main(int argc, char** argv) {
  const bool races = argc > 1 && std::string(argv[1]) == "--races";
  std::mt19937 rng(2204);
  test_plan();
  if (!races) test_int64_min();
  test_type<int64_t>("int64", races, rng);
  test_type<int32_t>("int32", races, rng);
  test_type<uint8_t>("uint8", races, rng);
  return host_check::finish("count_block");
}
