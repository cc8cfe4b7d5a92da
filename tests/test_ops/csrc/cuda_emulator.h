// A host emulator of the CUDA execution model, just wide enough for
// mmseg_arb/ops/csrc/arb_kernels.cu: included before that file, it lets the
// host compiler build the very kernels and launch wrappers a GPU runs, and
// runs each launch at its real geometry. Blocks run one after another, one
// host thread per CUDA thread, and within a block
//   warps          run one at a time between two __syncthreads, in a fixed
//                  order that starts at the middle warp (4, 5, 6, 7, 0, 1, 2,
//                  3 of 8) and wraps: a barrier a kernel lacks then shows as
//                  a wrong result, whichever side of it warp 0 sits on (a
//                  reader in warp 0 before the other warps' writes, or the
//                  other warps' next writes before warp 0's reads);
//   a warp's lanes run at once and meet at each warp intrinsic, as the
//                  converged lanes of a real warp do: a meeting is held
//                  once every lane of the warp has arrived or left (exited,
//                  or waiting at __syncthreads), and each lane gets its
//                  answer from the lanes there:
//   __shfl_down_sync  the value of lane + delta (its own past lane 31),
//   __match_any_sync  the lanes there that passed the same value,
//   __activemask      the lanes of the warp that have not left;
//   __shared__     a static variable (one block at a time uses it),
//   atomics        host atomics,
// and every launch is recorded (kernel, grid, threads, shared memory) for
// the tests to check the launch plans. What the hardware leaves undefined
// fails the launch (cudaGetLastError answers cudaErrorLaunchFailure, and
// stderr says why) rather than give some value: a lane that calls a *_sync
// intrinsic outside its mask, a shuffle whose mask names a lane that is not
// there, lanes of a warp in different intrinsics at once, and a
// __syncthreads that some threads of the block never reach. The occupancy
// API answers `emu::blocks_per_sm`, the current device is `emu::device`
// (the kernels keep one answer per device). What this cannot show is what
// only a GPU has: the intrinsics' own rounding, the hardware's own
// (unordered) scheduling, for which compute-sanitizer's racecheck and
// synccheck in tools/gpu_check.sh look, and the CUDA runtime.
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

#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace emu {

constexpr int kWarp = 32;

inline cudaError_t last_error = cudaSuccess;

// What the hardware leaves undefined: the launch fails, stderr says why.
inline void fault(const char* what, unsigned int block, unsigned int thread) {
  std::fprintf(stderr, "emulated kernel: %s (block %u, thread %u)\n", what,
               block, thread);
  last_error = cudaErrorLaunchFailure;
}

enum class Intrinsic { kShuffleDown, kMatchAny };

// One lane's part in a meeting of its warp.
struct Call {
  Intrinsic what;
  unsigned int mask;
  unsigned long long value;
  unsigned int delta;  // of a shuffle
};

struct Warp {
  unsigned int lanes = 0;    // the lanes it has
  unsigned int left = 0;     // exited, or waiting at __syncthreads
  unsigned int exited = 0;
  unsigned int here = 0;     // arrived at the meeting now held
  long meetings = 0;
  Call calls[kWarp];
  unsigned long long answers[kWarp];
  std::condition_variable changed;
};

// The block that runs now: its warps, the turn, the barrier. All of it
// under one mutex; each warp waits on its own condition.
class Block {
 public:
  // Its dynamic shared memory starts as garbage, as on the device, so that
  // a kernel that reads before it writes fails.
  Block(unsigned int index, int threads, size_t shared_bytes)
      : shared(shared_bytes / sizeof(unsigned long long) + 1,
               0xA5A5A5A5A5A5A5A5ull),
        index_(index), warps_((threads + kWarp - 1) / kWarp) {
    for (int t = 0; t < threads; ++t) {
      warps_[t / kWarp].lanes |= 1u << t % kWarp;
    }
    const int n = static_cast<int>(warps_.size());
    for (int k = 0; k < n; ++k) order_.push_back((n / 2 + k) % n);
  }

  // The thread starts when its warp's turn comes.
  void enter(unsigned int thread) {
    std::unique_lock<std::mutex> lock(mutex_);
    Warp& warp = warps_[thread / kWarp];
    warp.changed.wait(lock, [&] { return running() == &warp; });
  }

  // __syncthreads: the thread leaves its warp until every thread of the
  // block has come, then goes on at its warp's next turn.
  void sync(unsigned int thread) {
    std::unique_lock<std::mutex> lock(mutex_);
    Warp& warp = warps_[thread / kWarp];
    const long generation = barriers_;
    ++at_barrier_;
    leave(warp, thread, false);
    warp.changed.wait(lock, [&] {
      return barriers_ != generation && running() == &warp;
    });
  }

  // The thread has returned from the kernel.
  void exit(unsigned int thread) {
    std::lock_guard<std::mutex> lock(mutex_);
    leave(warps_[thread / kWarp], thread, true);
  }

  unsigned int active_mask(unsigned int thread) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Warp& warp = warps_[thread / kWarp];
    return warp.lanes & ~warp.left;
  }

  // A warp intrinsic: the lane arrives at its warp's meeting and gets its
  // answer once the meeting is held.
  unsigned long long meet(unsigned int thread, const Call& call) {
    std::unique_lock<std::mutex> lock(mutex_);
    Warp& warp = warps_[thread / kWarp];
    const int lane = thread % kWarp;
    if (!(call.mask >> lane & 1u)) {
      fault("a lane called a *_sync intrinsic outside its mask", index_,
            thread);
    }
    warp.calls[lane] = call;
    warp.here |= 1u << lane;
    const long meeting = warp.meetings;
    hold_meeting(warp);
    warp.changed.wait(lock, [&] { return warp.meetings != meeting; });
    return warp.answers[lane];
  }

  std::vector<unsigned long long> shared;  // dynamic shared memory

 private:
  Warp* running() {
    return turn_ < order_.size() ? &warps_[order_[turn_]] : nullptr;
  }

  void leave(Warp& warp, unsigned int thread, bool exited) {
    warp.left |= 1u << thread % kWarp;
    if (exited) {
      warp.exited |= 1u << thread % kWarp;
      ++exits_;
    }
    hold_meeting(warp);
    if (warp.left == warp.lanes) next_turn();
  }

  // Held once every lane of the warp has arrived or left.
  void hold_meeting(Warp& warp) {
    const unsigned int here = warp.here;
    if (here == 0 || (here | warp.left) != warp.lanes) return;
    const unsigned int first_thread =
        static_cast<unsigned int>(&warp - warps_.data()) * kWarp;
    for (int a = 0; a < kWarp; ++a) {
      if (!(here >> a & 1u)) continue;
      const Call& call = warp.calls[a];
      if (call.what != warp.calls[__builtin_ctz(here)].what) {
        fault("lanes of a warp in different warp intrinsics at once",
              index_, first_thread + a);
      }
      if (call.what == Intrinsic::kMatchAny) {
        unsigned int peers = 0;
        for (int b = 0; b < kWarp; ++b) {
          if ((here >> b & 1u) && warp.calls[b].value == call.value) {
            peers |= 1u << b;
          }
        }
        warp.answers[a] = peers & call.mask;
        continue;
      }
      if ((call.mask & here) != call.mask) {
        fault("a shuffle's mask names a lane that is not there", index_,
              first_thread + a);
      }
      const unsigned int from = a + call.delta;
      warp.answers[a] = from < kWarp && (here >> from & 1u)
                            ? warp.calls[from].value
                            : call.value;
    }
    warp.here = 0;
    ++warp.meetings;
    warp.changed.notify_all();
  }

  // The running warp has left: the next in order that has a lane to run;
  // when none has, the barrier opens and the order starts again.
  void next_turn() {
    while (running() != nullptr && running()->left == running()->lanes) {
      ++turn_;
    }
    if (running() != nullptr) {
      running()->changed.notify_all();
      return;
    }
    if (at_barrier_ == 0) return;  // every thread has exited
    if (exits_ > 0) {
      fault("a __syncthreads that some threads of the block never reach",
            index_, 0);
    }
    at_barrier_ = 0;
    ++barriers_;
    for (Warp& warp : warps_) warp.left = warp.exited;
    turn_ = 0;
    next_turn();
  }

  const unsigned int index_;
  std::vector<Warp> warps_;
  std::vector<int> order_;  // the warps' turns between two barriers
  size_t turn_ = 0;
  int at_barrier_ = 0, exits_ = 0;
  long barriers_ = 0;
  std::mutex mutex_;
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
      Block state(b, static_cast<int>(threads), shared_bytes);
      block = &state;
      std::vector<std::thread> team;
      team.reserve(threads);
      for (unsigned int t = 0; t < threads; ++t) {
        team.emplace_back([&, b, t] {
          thread_index = dim3(t);
          block_index = dim3(b);
          state.enter(t);
          kernel(args...);
          state.exit(t);
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

inline void __syncthreads() { emu::block->sync(threadIdx.x); }

template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta) {
  static_assert(sizeof(T) <= sizeof(unsigned long long), "one slot a lane");
  unsigned long long slot = 0;
  std::memcpy(&slot, &value, sizeof(T));
  slot = emu::block->meet(
      threadIdx.x, {emu::Intrinsic::kShuffleDown, mask, slot, delta});
  T result;
  std::memcpy(&result, &slot, sizeof(T));
  return result;
}

inline unsigned int __activemask() {
  return emu::block->active_mask(threadIdx.x);
}

inline unsigned int __match_any_sync(unsigned int mask, int value) {
  return static_cast<unsigned int>(emu::block->meet(
      threadIdx.x, {emu::Intrinsic::kMatchAny, mask,
                    static_cast<unsigned long long>(value), 0}));
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
