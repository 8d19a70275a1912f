// The ADL queue the engine keeps per (market, side) between waterfall calls, so that one
// liquidation pops its winners in O(log n) instead of scoring the whole side
// (docs/waterfall.md "The kept ADL queue"). Internal to the engine; the operations are
// Engine members (cpp/src/waterfall/adl_queue.cpp).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "deleverage/fixed_point.hpp"

namespace deleverage::detail {

// One position's place in a queue: its score when it was (re)scored. `version` is the
// account's change count then (Engine::account_version_): an entry whose account changed
// since is superseded by the re-scored one. The tie-break key, the account id, is not
// stored: 16 bytes instead of 24 put four children of a heap node in one cache line, and a
// crash step's pops, selections and purges walk a third less memory (AdlEntryAfter reads
// the id from the book, for equal scores only).
struct AdlEntry {
  i64 score;
  std::uint32_t account;
  std::uint32_t version;
};

// An entry's place in the order without its account: a queue's threshold.
struct AdlKey {
  i64 score;
  i64 id;
};

// Heap order: true when x comes after y (lower score; equal scores: larger account id).
// `ids` is the book's id column (Book::ids), indexed by AdlEntry::account: an account's id
// never changes, so the order is the one of entries that held (score, id). Scores are rarely
// equal, so the id loads sit behind a branch that is almost never taken, and the score
// comparison still compiles to conditional moves in the heap walks below.
struct AdlEntryAfter {
  const i64* ids;
  bool operator()(const AdlEntry& x, const AdlEntry& y) const {
    return (x.score < y.score) | ((x.score == y.score) && ids[x.account] > ids[y.account]);
  }
  // against a queue's threshold, which holds its id (an unbuilt queue's is (0, 0), no account)
  bool operator()(const AdlEntry& x, const AdlKey& y) const {
    return (x.score < y.score) | ((x.score == y.score) && ids[x.account] > y.id);
  }
};

// A vector whose resize leaves new entries uninitialized: a refresh writes every entry it
// keeps, so zero-filling a side's worth of entries first would only cost a memory pass.
// Entry 1 starts a cache line (the block is allocated 64 bytes early and aligned): in the
// 4-ary heap the children of node i are entries 4i+1..4i+4, so each node's four children
// then share one line, where a 16-byte misalignment would split every level of a pop over two.
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  static constexpr std::size_t kLine = 64;
  static constexpr std::size_t kShift = sizeof(T) < kLine && kLine % sizeof(T) == 0 ? kLine - sizeof(T) : 0;
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > (std::numeric_limits<std::size_t>::max() - kLine) / sizeof(T)) throw std::bad_array_new_length();
    char* p = static_cast<char*>(::operator new(n * sizeof(T) + kShift, std::align_val_t{kLine}));
    return reinterpret_cast<T*>(p + kShift);
  }
  void deallocate(T* p, std::size_t) noexcept {
    ::operator delete(reinterpret_cast<char*>(p) - kShift, std::align_val_t{kLine});
  }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using AdlEntries = std::vector<AdlEntry, UninitializedAllocator<AdlEntry>>;

// A 4-ary max-heap for the kept queues, ordered by AdlEntryAfter (front() is the head). A
// crash step pops about two million entries from heaps of thousands: four children per node
// halve the levels a pop walks down, each level's children lie in adjacent memory, and which
// child moves up is chosen by arithmetic (a tournament of three comparisons) instead of a
// branch that mispredicts about once per level.
namespace adl_heap_detail {
inline std::size_t best_of_four(const AdlEntry* d, std::size_t c, const AdlEntryAfter after) {
  const std::size_t x = c + static_cast<std::size_t>(after(d[c], d[c + 1]));
  const std::size_t y = c + 2 + static_cast<std::size_t>(after(d[c + 2], d[c + 3]));
  return after(d[x], d[y]) ? y : x;
}
// Moves e up from the hole at i to its place.
inline void sift_up(AdlEntry* d, std::size_t i, const AdlEntry e, const AdlEntryAfter after) {
  while (i > 0) {
    const std::size_t parent = (i - 1) / 4;
    if (!after(d[parent], e)) break;
    d[i] = d[parent];
    i = parent;
  }
  d[i] = e;
}
// Moves e down from the hole at i (n entries) to its place.
inline void sift_down(AdlEntry* d, std::size_t n, std::size_t i, const AdlEntry e,  // e by value: it may be d[i]
                      const AdlEntryAfter after) {
  for (;;) {
    const std::size_t c = 4 * i + 1;
    if (c >= n) break;
    std::size_t best = c;
    if (c + 4 <= n) {
      best = best_of_four(d, c, after);
    } else {
      for (std::size_t k = c + 1; k < n; ++k)
        if (after(d[best], d[k])) best = k;
    }
    if (!after(e, d[best])) break;
    d[i] = d[best];
    i = best;
  }
  d[i] = e;
}
}  // namespace adl_heap_detail

template <class Entries>
void adl_heap_push(Entries& h, const AdlEntry& e, const AdlEntryAfter after) {
  h.push_back(e);
  adl_heap_detail::sift_up(h.data(), h.size() - 1, e, after);
}

// Removes the top entry (h must not be empty) and returns it. The hole goes down to a leaf
// along the best children first and the last entry climbs back from there (Floyd): the
// last entry usually belongs near the bottom, so this saves a comparison per level.
template <class Entries>
AdlEntry adl_heap_pop(Entries& h, const AdlEntryAfter after) {
  AdlEntry* d = h.data();
  const AdlEntry top = d[0];
  const AdlEntry last = h.back();
  h.pop_back();
  const std::size_t n = h.size();
  if (n == 0) return top;
  std::size_t i = 0;
  for (;;) {
    const std::size_t c = 4 * i + 1;
    if (c + 4 > n) break;
    // The hole goes down one of four ways: request the children of all four (16 entries,
    // four lines) before comparing these, so that on a heap larger than the cache each
    // level's misses overlap the level above instead of following it.
    const std::size_t g = 4 * c + 1;
    if (g < n) {
      const char* from = reinterpret_cast<const char*>(d + g);
      const char* to = reinterpret_cast<const char*>(d + std::min(n, g + 16));
      for (const char* p = from; p < to; p += 64) __builtin_prefetch(p);
      __builtin_prefetch(to - 1);
    }
    const std::size_t best = adl_heap_detail::best_of_four(d, c, after);
    d[i] = d[best];
    i = best;
  }
  const std::size_t c = 4 * i + 1;
  if (c < n) {  // a last node with fewer than four children
    std::size_t best = c;
    for (std::size_t k = c + 1; k < n; ++k)
      if (after(d[best], d[k])) best = k;
    d[i] = d[best];
    i = best;
  }
  adl_heap_detail::sift_up(d, i, last, after);
  return top;
}

// Puts h in heap order (O(n)).
template <class Entries>
void adl_heap_make(Entries& h, const AdlEntryAfter after) {
  const std::size_t n = h.size();
  if (n < 2) return;
  for (std::size_t i = (n - 2) / 4 + 1; i-- > 0;) adl_heap_detail::sift_down(h.data(), n, i, h[i], after);
}

// The queues a caller of Engine::adl_queue will use besides the one it asks for: the other
// side of the market, or most queues of the book (a whole-book waterfall step).
enum class QueueScope : std::uint8_t { Side, Market, Book };

// Where the kept queues' catch-up stands (Engine::catch_up_adl_queues).
struct AdlCatchUp {
  std::uint64_t seen_to = 0;        // the queues have seen the engine's change log up to here
  std::vector<std::uint32_t> live;  // indices of the queues a catch-up looks at
  // the engine's marks epoch when a catch-up last checked which listed queues are fresh (~0:
  // check at the next one): only a mark change, a new refresh policy or queues forgotten can
  // make one stale
  std::uint64_t live_checked_epoch = ~std::uint64_t{0};
  std::vector<std::uint32_t> seen;  // scratch: account -> the last round that re-scored it
  std::uint32_t round = 0;
};

struct KeptAdlQueue {
  bool built = false;
  std::uint8_t ranking = 0;
  // The selected head in heap order (plus entries of re-scored accounts); `reserve` holds the
  // side's other entries, unsorted, every one of them after `threshold` (the last entry
  // selected), so the heap's top is the queue's head while it is not after `threshold`.
  AdlEntries heap;
  AdlEntries reserve;
  AdlKey threshold{};
  std::size_t next_select = 256;     // the next selection's size (see Engine::select_adl_head)
  std::uint64_t marks_epoch = 0;     // the engine's mark-change count at the refresh
  std::uint64_t market_updates = 0;  // the market's mark-update count at the refresh
  bool listed = false;               // in the engine's list of queues that catch-ups look at
  bool catch_up = false;             // fresh at the last catch-up: re-scored accounts are pushed here
  // Current entries whose account was liquidatable itself when popped or re-scored, so not a
  // winner. They
  // stay out of the heap, so later pops do not meet them again, until something can make them
  // eligible: a change to the account (its re-scoring pushes a new entry and supersedes the
  // parked one) or a mark change (parked_epoch: they go back to the heap).
  AdlEntries parked;
  // A second heap: current entries a queue haircut found with nothing to take (no profit, no
  // free equity, or all taken this step). ADL closes still pop them; haircuts do not meet them
  // again until the account changes (re-scored), the marks move, or (for what a step took)
  // the step ends, when the step notes its haircut accounts as changed.
  AdlEntries aside;
  std::uint64_t parked_epoch = 0;  // the engine's mark-change count when `parked` and `aside` were last re-checked
  std::uint64_t pops = 0;          // entries taken off the heap since the queue was built (tests bound it)
  // Re-scored entries pushed since the last purge: each may have left an older entry behind,
  // which would cost a pop when it surfaces (see Engine::purge_superseded).
  std::size_t superseded = 0;
  // Superseded entries popped off the heap since it was last purged of them: the re-scored
  // winners of a crash go back near the head, so their old entries collect in the heap and
  // each costs a pop (about half of a crash step's pops); past a quarter of the heap, one
  // linear pass (Engine::purge_heap) is cheaper and keeps the heap small.
  std::size_t dead_pops = 0;

  // Back to an unbuilt queue, keeping the buffers' capacity (a refresh reuses them).
  void reset() {
    AdlEntries keep[4] = {std::move(heap), std::move(reserve), std::move(parked), std::move(aside)};
    const bool was_listed = listed;
    *this = KeptAdlQueue{};
    listed = was_listed;
    for (AdlEntries& v : keep) v.clear();
    heap = std::move(keep[0]), reserve = std::move(keep[1]), parked = std::move(keep[2]), aside = std::move(keep[3]);
  }
};

}  // namespace deleverage::detail
