// A running maximum that threads may raise concurrently. Relaxed ordering: it holds a bound
// that only decides whether a check can be skipped, never a value other threads wait on.
// Copyable (unlike std::atomic) so that the Engine holding it stays copyable.
#pragma once
#include <atomic>
#include <cstdint>

namespace deleverage::detail {

class RelaxedMax {
 public:
  RelaxedMax() = default;
  RelaxedMax(const RelaxedMax& other) : v_(other.get()) {}
  RelaxedMax& operator=(const RelaxedMax& other) {
    v_.store(other.get(), std::memory_order_relaxed);
    return *this;
  }
  std::uint64_t get() const { return v_.load(std::memory_order_relaxed); }
  void set(std::uint64_t x) { v_.store(x, std::memory_order_relaxed); }
  void raise(std::uint64_t x) {
    std::uint64_t cur = get();
    while (x > cur && !v_.compare_exchange_weak(cur, x, std::memory_order_relaxed)) {
    }
  }

 private:
  std::atomic<std::uint64_t> v_{0};
};

}  // namespace deleverage::detail
