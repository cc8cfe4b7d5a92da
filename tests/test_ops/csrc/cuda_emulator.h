// A host emulator of the CUDA execution model, just wide enough for
// mmseg_arb/ops/csrc/arb_kernels.cu: included before that file, it lets the
// host compiler build the very kernels and launch wrappers a GPU runs, and
// runs each launch at its real geometry. Blocks run one after another; the
// threads of a block run at once, one host thread per CUDA thread, so that
//   __syncthreads     is a barrier of the block's threads,
//   __shfl_down_sync  an exchange between the 32 lanes of a warp (each lane
//                     publishes, the warp meets, each reads, the warp meets),
//   __shared__        a static variable (one block at a time uses it),
//   atomics           host atomics,
//   __match_any_sync  each lane alone: a legal __activemask() result under
//                     independent thread scheduling (the converged case is
//                     test_count_block.cu's),
// and every launch is recorded (kernel, grid, threads, shared memory) for
// the tests to check the launch plans. The occupancy API answers
// `emu::blocks_per_sm`, the current device is `emu::device` (the kernels
// keep one answer per device). What this cannot show is what only a GPU
// has: the intrinsics' own rounding, real warp convergence (a missing
// barrier may pass here: compute-sanitizer's racecheck and synccheck in
// tools/gpu_check.sh look for those) and the CUDA runtime.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "host_check.h"

#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace emu {

using host_check::Barrier;

constexpr int kWarp = 32;

struct Warp {
  Barrier meet{kWarp};
  unsigned long long slots[kWarp] = {};
};

// The block that runs now. Its dynamic shared memory starts as garbage,
// as on the device, so that a kernel that reads before it writes fails.
struct Block {
  explicit Block(int threads, size_t shared_bytes)
      : sync(threads), warps((threads + kWarp - 1) / kWarp),
        shared(shared_bytes / sizeof(unsigned long long) + 1,
               0xA5A5A5A5A5A5A5A5ull) {}
  Barrier sync;
  std::vector<Warp> warps;
  std::vector<unsigned long long> shared;  // dynamic shared memory
};

struct Launch {
  const void* kernel;
  unsigned int grid, threads;
  size_t shared_bytes;
};

inline Block* block = nullptr;
inline dim3 grid_dim, block_dim;
inline thread_local dim3 thread_index, block_index;
inline std::vector<Launch> launches;
inline int blocks_per_sm = 3;
inline int device = 0;
inline cudaError_t last_error = cudaSuccess;

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(block->shared.data());
}

template <typename... Params>
struct Launcher {
  void (*kernel)(Params...);
  unsigned int grid, threads;
  size_t shared_bytes;

  template <typename... Args>
  void operator()(Args... args) const {
    launches.push_back(
        {reinterpret_cast<const void*>(kernel), grid, threads, shared_bytes});
    if (grid == 0 || threads == 0 || threads > 1024 ||
        shared_bytes > 48 * 1024) {
      last_error = cudaErrorInvalidConfiguration;
      return;
    }
    grid_dim = dim3(grid);
    block_dim = dim3(threads);
    for (unsigned int b = 0; b < grid; ++b) {
      Block state(static_cast<int>(threads), shared_bytes);
      block = &state;
      std::vector<std::thread> team;
      team.reserve(threads);
      for (unsigned int t = 0; t < threads; ++t) {
        team.emplace_back([&, b, t] {
          thread_index = dim3(t);
          block_index = dim3(b);
          kernel(args...);
        });
      }
      for (auto& member : team) member.join();
      block = nullptr;
    }
  }
};

template <typename... Params>
Launcher<Params...> launch(unsigned int grid, unsigned int threads,
                           size_t shared_bytes, void (*kernel)(Params...)) {
  return Launcher<Params...>{kernel, grid, threads, shared_bytes};
}

}  // namespace emu

#define threadIdx (::emu::thread_index)
#define blockIdx (::emu::block_index)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define ARB_LAUNCH(grid, threads, shared_bytes, stream, ...) \
  ::emu::launch(grid, threads, shared_bytes, __VA_ARGS__)
#define ARB_DYNAMIC_SHARED(type, name) \
  type* name = ::emu::dynamic_shared<type>()

inline void __syncthreads() { emu::block->sync.wait(); }

template <typename T>
T __shfl_down_sync(unsigned int, T value, unsigned int delta) {
  static_assert(sizeof(T) <= sizeof(unsigned long long), "one slot a lane");
  const unsigned int lane = threadIdx.x % emu::kWarp;
  emu::Warp& warp = emu::block->warps[threadIdx.x / emu::kWarp];
  std::memcpy(&warp.slots[lane], &value, sizeof(T));
  warp.meet.wait();
  T result = value;
  if (lane + delta < emu::kWarp) {
    std::memcpy(&result, &warp.slots[lane + delta], sizeof(T));
  }
  warp.meet.wait();
  return result;
}

inline unsigned int __activemask() { return 0xffffffffu; }
inline unsigned int __match_any_sync(unsigned int, int) {
  return 1u << (threadIdx.x % emu::kWarp);
}

// The device's integer max (host C++ has only std::max).
inline long long max(long long a, long long b) { return a < b ? b : a; }

template <typename T>
T __ldg(const T* p) {
  return *p;
}

template <typename T>
T atomicAdd(T* address, T value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

inline unsigned long long atomicMax(unsigned long long* address,
                                    unsigned long long value) {
  unsigned long long old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (old < value &&
         !__atomic_compare_exchange_n(address, &old, value, true,
                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

extern "C" cudaError_t cudaGetDevice(int* device) {
  *device = emu::device;
  return cudaSuccess;
}

extern "C" cudaError_t cudaGetLastError(void) {
  const cudaError_t error = emu::last_error;
  emu::last_error = cudaSuccess;
  return error;
}

extern "C" cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(
    int* blocks, const void*, int, size_t) {
  *blocks = emu::blocks_per_sm;
  return cudaSuccess;
}

// What the runtime's C++ template of the call above calls.
extern "C" cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    int* blocks, const void* kernel, int threads, size_t shared_bytes,
    unsigned int) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel,
                                                       threads, shared_bytes);
}
