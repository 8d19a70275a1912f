// Output columns: std::vector with an allocator whose resize() leaves new elements
// default-initialized (not zeroed). Columns are written once in full, so zeroing them first
// would add a pass over the memory.
//
// (Measured: backing large columns with madvise(MADV_HUGEPAGE) made the 10M-position check
// 3x slower on this kernel; glibc's dynamic mmap threshold already reuses freed report memory
// without page faults, so plain malloc is used.)
#pragma once
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

namespace deleverage::detail {

template <class T, class A = std::allocator<T>>
class default_init_allocator : public A {
 public:
  template <class U>
  struct rebind {
    using other = default_init_allocator<U, typename std::allocator_traits<A>::template rebind_alloc<U>>;
  };
  using A::A;
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    std::allocator_traits<A>::construct(static_cast<A&>(*this), p, std::forward<Args>(args)...);
  }
};

}  // namespace deleverage::detail

namespace deleverage {
template <class T>
using column = std::vector<T, detail::default_init_allocator<T>>;
}  // namespace deleverage
