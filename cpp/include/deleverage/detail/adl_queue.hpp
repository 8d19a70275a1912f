// The ADL queue the engine keeps per (market, side) between waterfall calls, so that one
// liquidation pops its winners in O(log n) instead of scoring the whole side
// (docs/waterfall.md "The kept ADL queue"). Internal to the engine; the operations are
// Engine members (cpp/src/waterfall/adl_queue.cpp).
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "deleverage/fixed_point.hpp"

namespace deleverage::detail {

// One position's place in a queue: its score when it was (re)scored. `stamp` tells the
// account's current entry from an older one superseded by a re-scoring.
struct AdlEntry {
  i64 score;
  i64 id;
  std::uint32_t account;
  std::uint32_t stamp;
};

// Heap order: true when x comes after y (lower score; equal scores: larger account id).
struct AdlEntryAfter {
  bool operator()(const AdlEntry& x, const AdlEntry& y) const {
    return x.score < y.score || (x.score == y.score && x.id > y.id);
  }
};

struct KeptAdlQueue {
  bool built = false;
  std::uint8_t ranking = 0;
  // The selected head in heap order (plus entries of re-scored accounts); `reserve` holds the
  // side's other entries, unsorted, every one of them after `threshold` (the last entry
  // selected), so the heap's top is the queue's head while it is not after `threshold`.
  std::vector<AdlEntry> heap;
  std::vector<AdlEntry> reserve;
  AdlEntry threshold{};
  std::size_t next_select = 0;  // entries the next selection moves from the reserve
  // account -> stamp of its current entry; accounts absent here keep the refresh's stamp 0
  std::unordered_map<std::uint32_t, std::uint32_t> restamped;
  std::uint32_t next_stamp = 1;
  std::uint64_t marks_epoch = 0;     // the engine's mark-change count at the refresh
  std::uint64_t market_updates = 0;  // the market's mark-update count at the refresh
  std::uint64_t log_pos = 0;         // the change log is applied up to here (absolute index)

  bool current(const AdlEntry& e) const {
    const auto it = restamped.find(e.account);
    return e.stamp == (it == restamped.end() ? 0u : it->second);
  }
};

}  // namespace deleverage::detail
