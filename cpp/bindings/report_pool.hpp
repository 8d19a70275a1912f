// Memory for the columns of full margin reports (the check_margin bindings): the blocks of
// a freed report are kept and handed to the next report asking for the same size.
//
// Why: a full report of 1M accounts is 26-42 MB. glibc hands blocks that large back to the
// kernel when they are freed (it trims the heap top past its trim threshold), so each new
// report paid a page fault for every 4 KiB it wrote: a one-thread check of 10M positions
// took 50 ms into a new report against 35 ms into a reused one (out=), and 35 ms into a new
// one with trimming turned off. At most kMaxBytes are kept, oldest given back first;
// blocks below kMinBytes go straight to malloc.
#pragma once
#include <pybind11/numpy.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace deleverage::bindings {
namespace py = pybind11;

class ReportPool {
 public:
  static constexpr std::size_t kMinBytes = std::size_t{64} << 10;
  static constexpr std::size_t kMaxBytes = std::size_t{256} << 20;

  // Process-wide and never destroyed: a report's arrays may be freed at interpreter exit.
  static ReportPool& instance() {
    static ReportPool* const pool = new ReportPool;
    return *pool;
  }

  // A block of `bytes` (a kept one of exactly that size when there is one).
  void* take(std::size_t bytes) {
    if (bytes >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mu_);
      for (std::size_t i = free_.size(); i-- > 0;) {
        if (free_[i].bytes != bytes) continue;
        void* p = free_[i].p;
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
        kept_ -= bytes;
        return p;
      }
    }
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }

  // Takes back a block from take(): kept for a later report, or freed.
  void give(void* p, std::size_t bytes) {
    if (bytes < kMinBytes || bytes > kMaxBytes) {
      std::free(p);
      return;
    }
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (kept_ + bytes > kMaxBytes) {
        kept_ -= free_.front().bytes;
        evicted.push_back(free_.front().p);
        free_.erase(free_.begin());
      }
      free_.push_back(Block{p, bytes});
      kept_ += bytes;
    }
    for (void* q : evicted) std::free(q);
  }

 private:
  struct Block {
    void* p;
    std::size_t bytes;
  };
  std::mutex mu_;
  std::vector<Block> free_;  // oldest first
  std::size_t kept_ = 0;
};

// One report column of n elements from the pool, given back unless handed to numpy.
template <class T>
class PooledColumn {
 public:
  explicit PooledColumn(std::size_t n) : n_(n), p_(static_cast<T*>(ReportPool::instance().take(n * sizeof(T)))) {}
  ~PooledColumn() {
    if (p_ != nullptr) ReportPool::instance().give(p_, n_ * sizeof(T));
  }
  PooledColumn(const PooledColumn&) = delete;
  PooledColumn& operator=(const PooledColumn&) = delete;
  T* data() const { return p_; }

  // A numpy array that owns the block and gives it back to the pool when it is freed
  // (dtype bool for a uint8 column when `as_bool`). Needs the GIL.
  py::array to_numpy(bool as_bool = false) {
    struct Owner {
      void* p;
      std::size_t bytes;
    };
    auto* owner = new Owner{p_, n_ * sizeof(T)};
    py::capsule free_when_done(owner, [](void* o) {
      auto* w = static_cast<Owner*>(o);
      ReportPool::instance().give(w->p, w->bytes);
      delete w;
    });
    p_ = nullptr;  // the capsule owns the block now
    const py::dtype dtype = as_bool ? py::dtype("bool") : py::dtype::of<T>();
    return py::array(dtype, {static_cast<py::ssize_t>(n_)}, {static_cast<py::ssize_t>(sizeof(T))}, owner->p,
                     free_when_done);
  }

 private:
  std::size_t n_;
  T* p_;
};

}  // namespace deleverage::bindings
