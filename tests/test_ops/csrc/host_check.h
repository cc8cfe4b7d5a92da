// What the host tests of the kernels share: check bookkeeping (each binary
// counts its checks, prints its first failures, and ends with the
// "<suite>: N checks, M failed" line that test_kernel_logic.py reads) and
// the barrier of emulated CUDA threads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace host_check {

inline int failures = 0;
inline long checks = 0;

// Counts one check. True if it failed and is among the first 20 failures,
// the ones worth printing.
inline bool tally(bool ok) {
  ++checks;
  return !ok && ++failures <= 20;
}

// Prints the summary line; the process exit status.
inline int finish(const char* suite) {
  std::printf("%s: %ld checks, %d failed\n", suite, checks, failures);
  return failures == 0 ? 0 : 1;
}

// A barrier that some thread never reaches (a __syncthreads or a shuffle
// under a condition that is not uniform) is a hang on the device: here it
// aborts the test with a message instead (after 5 minutes: ThreadSanitizer
// runs are slow).
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      changed_.notify_all();
    } else if (!changed_.wait_for(lock, std::chrono::minutes(5), [&] {
                 return generation_ != generation;
               })) {
      std::fprintf(stderr, "host test: a barrier of %d threads was reached "
                   "by %d in 5 minutes: divergent __syncthreads or "
                   "shuffle\n",
                   count_, arrived_);
      std::abort();
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  const int count_;
  int arrived_ = 0;
  long generation_ = 0;
};

}  // namespace host_check
