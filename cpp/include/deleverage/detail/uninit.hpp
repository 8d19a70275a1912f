// Output columns: std::vector with an allocator that
//  * leaves new elements default-initialized (not zeroed): columns are written once in full,
//    so zeroing them first would double the memory traffic;
//  * backs large columns with transparent huge pages on Linux: a fresh 40 MB report would
//    otherwise take ~10,000 page faults, more than the margin check itself costs.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace deleverage::detail {

template <class T>
struct column_allocator {
  using value_type = T;
  static constexpr std::size_t kHuge = std::size_t{2} << 20;

  column_allocator() noexcept = default;
  template <class U>
  column_allocator(const column_allocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes >= 2 * kHuge) {
      const std::size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
      void* p = std::aligned_alloc(kHuge, rounded);
      if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      madvise(p, rounded, MADV_HUGEPAGE);  // a hint; failure only costs speed
#endif
      return static_cast<T*>(p);
    }
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { std::free(p); }

  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const column_allocator<U>&) const noexcept { return true; }
};

}  // namespace deleverage::detail

namespace deleverage {
template <class T>
using column = std::vector<T, detail::column_allocator<T>>;
}  // namespace deleverage
