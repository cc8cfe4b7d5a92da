// Check bookkeeping shared by the host tests of the kernel logic: each
// binary counts its checks, prints its first failures, and ends with the
// "<suite>: N checks, M failed" line that test_kernel_logic.py reads.
#pragma once

#include <cstdio>

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

}  // namespace host_check
