// Maps user-chosen int64 account ids to dense indices (0, 1, 2, ... in creation order).
// Open addressing with linear probing; each slot holds a dense index (4 bytes), the id
// itself is read from the engine's id column, so the table costs ~8 bytes per account.
#pragma once
#include <cstdint>
#include <vector>

#include "deleverage/fixed_point.hpp"

namespace deleverage {

class AccountIndex {
 public:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;

  // Dense index of `id`, or kNone.
  std::uint32_t find(i64 id, const std::vector<i64>& ids) const {
    if (slots_.empty()) return kNone;
    std::size_t mask = slots_.size() - 1;
    for (std::size_t s = hash(id) & mask;; s = (s + 1) & mask) {
      std::uint32_t idx = slots_[s];
      if (idx == kNone) return kNone;
      if (ids[idx] == id) return idx;
    }
  }
  // Starts loading the table slot where `id` is looked for (a hint: hot single-account
  // calls look up two accounts, and their cache misses overlap).
  void prefetch(i64 id) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[hash(id) & (slots_.size() - 1)]);
  }
  // find() for n ids at once (kNone where unknown). A bulk load in random row order makes
  // every lookup two dependent cache misses (the table slot, then the id it points at); the
  // slot kAhead rows ahead is prefetched, and the id behind the slot kAhead / 2 rows ahead,
  // so that the misses of many rows overlap.
  void find_many(const i64* in, std::size_t n, std::uint32_t* out, const std::vector<i64>& ids) const {
    if (slots_.empty()) {
      for (std::size_t i = 0; i < n; ++i) out[i] = kNone;
      return;
    }
    constexpr std::size_t kAhead = 16;
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = 0; i < n; ++i) {
      if (i + kAhead < n) __builtin_prefetch(&slots_[hash(in[i + kAhead]) & mask]);
      if (i + kAhead / 2 < n) {
        const std::uint32_t idx = slots_[hash(in[i + kAhead / 2]) & mask];
        if (idx != kNone) __builtin_prefetch(&ids[idx]);
      }
      out[i] = find(in[i], ids);
    }
  }
  // Records that ids[index] == id (which must not be present yet).
  void insert(i64 id, std::uint32_t index, const std::vector<i64>& ids) {
    if ((size_ + 1) * 2 > slots_.size()) grow(ids);
    place(id, index);
    ++size_;
  }
  void reserve(std::size_t n, const std::vector<i64>& ids) {
    if ((n + 1) * 2 > slots_.size()) rehash(capacity_for(n), ids);
  }
  // Rebuilds from the id column (used after restoring state).
  void rebuild(const std::vector<i64>& ids) {
    size_ = 0;
    slots_.assign(capacity_for(ids.size()), kNone);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      place(ids[i], static_cast<std::uint32_t>(i));
      ++size_;
    }
  }
  std::size_t memory_bytes() const { return slots_.capacity() * sizeof(std::uint32_t); }

 private:
  static std::size_t capacity_for(std::size_t n) {
    std::size_t c = 16;
    while (c < 2 * (n + 1)) c *= 2;
    return c;
  }
  static std::size_t hash(i64 id) {  // splitmix64 finalizer: ids are often sequential
    u64 z = static_cast<u64>(id) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<std::size_t>(z ^ (z >> 31));
  }
  void place(i64 id, std::uint32_t index) {
    std::size_t mask = slots_.size() - 1;
    std::size_t s = hash(id) & mask;
    while (slots_[s] != kNone) s = (s + 1) & mask;
    slots_[s] = index;
  }
  void grow(const std::vector<i64>& ids) { rehash(slots_.empty() ? 16 : slots_.size() * 2, ids); }
  void rehash(std::size_t cap, const std::vector<i64>& ids) {
    std::vector<std::uint32_t> old;
    old.swap(slots_);
    slots_.assign(cap, kNone);
    for (std::uint32_t idx : old)
      if (idx != kNone) place(ids[idx], idx);
  }

  std::vector<std::uint32_t> slots_;
  std::size_t size_ = 0;
};

}  // namespace deleverage
