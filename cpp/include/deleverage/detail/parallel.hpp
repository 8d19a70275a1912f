// A minimal static parallel-for over an index range (no thread pool: batch calls are long
// enough that starting a thread costs nothing measurable).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace deleverage::detail {

template <class Fn>
void parallel_for(std::size_t n, int threads, std::size_t min_per_thread, Fn&& fn) {
  std::size_t t = static_cast<std::size_t>(std::max(1, threads));
  t = std::min(t, std::max<std::size_t>(1, n / std::max<std::size_t>(1, min_per_thread)));
  if (t <= 1) {
    fn(std::size_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(t);
  const std::size_t chunk = (n + t - 1) / t;
  for (std::size_t i = 1; i < t; ++i) {
    const std::size_t b = std::min(n, i * chunk), e = std::min(n, b + chunk);
    pool.emplace_back([&, i, b, e] {
      try {
        fn(b, e);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  try {
    fn(std::size_t{0}, std::min(n, chunk));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Hands out chunks of `chunk` indices to threads as they free up: on a shared machine a
// static split waits for the slowest thread.
template <class Fn>
void parallel_for_dynamic(std::size_t n, int threads, std::size_t chunk, Fn&& fn) {
  const std::size_t chunks = (n + chunk - 1) / chunk;
  const std::size_t t = std::min<std::size_t>(static_cast<std::size_t>(std::max(1, threads)), chunks);
  if (t <= 1) {
    fn(std::size_t{0}, n);
    return;
  }
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1))
      fn(c * chunk, std::min(n, (c + 1) * chunk));
  };
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(t);
  for (std::size_t i = 1; i < t; ++i)
    pool.emplace_back([&, i] {
      try {
        worker();
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  try {
    worker();
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace deleverage::detail
