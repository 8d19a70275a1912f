// The position store: accounts (ids, the id index, the 64-byte hot line of each), the
// position columns in per-account blocks, the per-market holder lists, and the management of
// slots. Part of the Engine's state (the Engine composes it); internal to the core, not an
// embedding API of its own (namespace detail).
//
// Layout (structure of arrays):
//  * accounts: id, and a hot line (cached margin sums, balance, the account's block
//    [start, start+count) of position slots with spare capacity up to capacity(a)); an
//    account's positions are contiguous, so the full margin check streams.
//  * positions: size (lots), entry notional (money), market id, and the position's index in
//    its market's holder list. Removing a position swap-removes it inside its block; a block
//    that outgrows its capacity moves to the end (amortized O(1)); the columns are compacted
//    when more than half of them is abandoned blocks.
//  * per market: the accounts holding a position there, so a mark move only touches those.
//
// The Book keeps storage consistent (blocks, holder lists, counters); what a position is worth
// (the cached sums) is the Engine's to keep in step: it sits in the hot line because every
// per-account operation reads both.
#pragma once
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "deleverage/account_index.hpp"
#include "deleverage/detail/serial.hpp"
#include "deleverage/fixed_point.hpp"
#include "deleverage/market.hpp"
#include "deleverage/undo_log.hpp"

namespace deleverage::detail {

// An account's sums over its positions in value units (unrealized PnL; maintenance and
// initial requirement times kRateScale), at each market's valued mark.
struct MarginSums {
  i128 u = 0, mm = 0, im = 0;
};

// The fields every per-account operation touches share one cache line: a market's accounts
// are scattered, so each of them costs one miss instead of five.
struct alignas(64) AccountHot {
  MarginSums cache;                    // sums at each market's valued mark (incremental check)
  i64 balance = 0;                     // money units
  std::uint32_t start = 0, count = 0;  // the account's block of position slots
};
static_assert(sizeof(AccountHot) == 64);

class Book {
 public:
  static constexpr std::uint32_t kNoSlot = 0xFFFFFFFFu;
  static constexpr std::uint16_t kNoMarket = 0xFFFF;

  // ---- accounts ----
  std::size_t account_count() const { return ids_.size(); }
  // Account ids in creation order (dense index a -> id).
  const std::vector<i64>& ids() const { return ids_; }
  // Dense index of an id, AccountIndex::kNone if unknown.
  std::uint32_t find(i64 id) const { return index_.find(id, ids_); }
  void find_many(const i64* in, std::size_t n, std::uint32_t* out) const { index_.find_many(in, n, out, ids_); }
  void prefetch_id(i64 id) const { index_.prefetch(id); }
  std::span<AccountHot> hot() { return {acc_.data(), acc_.size()}; }
  std::span<const AccountHot> hot() const { return {acc_.data(), acc_.size()}; }
  // Slots reserved for account a's block (>= its count).
  std::uint32_t capacity(std::uint32_t a) const { return acc_cap_[a]; }
  // A new flat account with a zero balance; returns its index. InvalidInput past 2^32 - 2.
  std::uint32_t create_account(i64 id);
  void reserve_accounts(std::size_t extra);
  // Forgets the accounts created after the first n (a failed call's, which hold no position).
  void truncate_accounts(std::size_t n);

  // ---- positions ----
  std::span<i64> sizes() { return {size_.data(), size_.size()}; }
  std::span<const i64> sizes() const { return {size_.data(), size_.size()}; }
  std::span<i64> entries() { return {entry_.data(), entry_.size()}; }
  std::span<const i64> entries() const { return {entry_.data(), entry_.size()}; }
  // market id per slot (kNoMarket in a free slot); index in the market's holder list per slot
  std::span<const std::uint16_t> markets() const { return {market_.data(), market_.size()}; }
  std::span<const std::uint32_t> mslots() const { return {mslot_.data(), mslot_.size()}; }
  std::size_t live_positions() const { return live_positions_; }
  // Account a's slot in market m, kNoSlot if it holds no position there (hot: inline).
  std::uint32_t find_slot(std::uint32_t a, MarketId m) const {
    const std::uint32_t b = acc_[a].start, e = b + acc_[a].count;
    for (std::uint32_t s = b; s < e; ++s)
      if (market_[s] == m) return s;
    return kNoSlot;
  }
  void reserve_positions(std::size_t extra_slots);
  // Makes room for `extra` more positions in account a's block, moving the block to the end
  // of the columns if it is full. Bulk loads ask for an exact fit (no slack in a loaded
  // book); single inserts double.
  void ensure_capacity(std::uint32_t a, std::uint32_t extra, bool exact_fit);
  // Rewrites the columns in account order with each block at its exact size once abandoned
  // blocks make up more than half of them. Amortized O(1) per moved block.
  void compact_if_wasteful();
  // A new (zero) position of account a in market m, which it does not hold: its slot.
  std::uint32_t add_position(std::uint32_t a, MarketId m) {
    ensure_capacity(a, 1, false);
    const std::uint32_t s = acc_[a].start + acc_[a].count;
    ++acc_[a].count;
    ++live_positions_;
    std::vector<std::uint32_t>& list = holders_[static_cast<std::size_t>(m)];
    market_[s] = static_cast<std::uint16_t>(m);
    mslot_[s] = static_cast<std::uint32_t>(list.size());
    list.push_back(a);
    return s;
  }
  // Removes account a's position in market m, at slot s: swap-removes it from the market's
  // holder list and from the account's block.
  void remove_position(std::uint32_t a, MarketId m, std::uint32_t s) {
    std::vector<std::uint32_t>& list = holders_[static_cast<std::size_t>(m)];
    const std::uint32_t ms = mslot_[s];
    const std::uint32_t moved_account = list.back();
    list[ms] = moved_account;
    list.pop_back();
    if (moved_account != a) mslot_[find_slot(moved_account, m)] = ms;
    // The next closes in this market move the accounts now last: start loading them (a crash
    // closes many positions of one market in a row, and these lookups are cache misses). Two
    // stages: the line of the account before the last now, and the block of the last, whose
    // line was requested at the previous removal (so reading where its block starts is a hit).
    if (list.size() > 1) __builtin_prefetch(&acc_[list[list.size() - 2]]);
    if (!list.empty()) __builtin_prefetch(market_.data() + acc_[list.back()].start);
    const std::uint32_t last = acc_[a].start + acc_[a].count - 1;
    size_[s] = size_[last];
    entry_[s] = entry_[last];
    market_[s] = market_[last];
    mslot_[s] = mslot_[last];
    market_[last] = kNoMarket;
    size_[last] = 0;
    entry_[last] = 0;
    --acc_[a].count;
    --live_positions_;
  }

  // ---- per-market holder lists ----
  void add_market() { holders_.emplace_back(); }
  // Dense indices of the accounts holding a position in m, in no particular order.
  const std::vector<std::uint32_t>& holders(MarketId m) const { return holders_[static_cast<std::size_t>(m)]; }
  void reserve_holders(MarketId m, std::size_t extra) {
    std::vector<std::uint32_t>& list = holders_[static_cast<std::size_t>(m)];
    if (list.size() + extra > list.capacity()) list.reserve(list.size() + extra + 1);
  }

  // Bytes held (capacity of every column, the index and the holder lists).
  std::size_t memory_bytes() const;

  // ---- the undo log (undo_log.hpp): empty between operations ----
  UndoLog& undo_log() { return undo_; }
  const UndoLog& undo_log() const { return undo_; }

  // ---- snapshot and state hash (docs/durability.md) ----
  // The accounts and positions sections of the payload, column by column, positions in
  // account order (each account's slots in block order).
  template <class Out>
  void write(Out& w) const {
    const std::size_t n = ids_.size();
    w.template put<u64>(n);
    w.array(ids_.data(), n);
    for (std::size_t a = 0; a < n; ++a) w.template put<i64>(acc_[a].balance);
    for (std::size_t a = 0; a < n; ++a) w.template put<std::uint32_t>(acc_[a].count);
    w.template put<u64>(live_positions_);
    for (std::size_t a = 0; a < n; ++a) w.array(market_.data() + acc_[a].start, acc_[a].count);
    for (std::size_t a = 0; a < n; ++a) w.array(size_.data() + acc_[a].start, acc_[a].count);
    for (std::size_t a = 0; a < n; ++a) w.array(entry_.data() + acc_[a].start, acc_[a].count);
    for (std::size_t a = 0; a < n; ++a) w.array(mslot_.data() + acc_[a].start, acc_[a].count);
  }
  // Reads those sections into an empty book with n_markets markets (CorruptSnapshot for
  // counts that do not add up or a repeated id).
  void read(detail::Reader& r, std::size_t n_markets);
  // Checks that every position's market is one of the n_markets and sizes the holder lists;
  // rebuild_holders() fills them once the caller has checked the rest.
  void size_holders(std::size_t n_markets);
  // Fills the holder lists from the holder slots, which must form a permutation.
  void rebuild_holders();
  // The accounts' part of the state hash: a commutative sum of a strong per-account hash (id,
  // balance, positions sorted by market) in two lanes, independent of creation order.
  std::pair<u64, u64> hash_accounts(int threads) const;

 private:
  AccountIndex index_;
  std::vector<i64> ids_;
  std::vector<AccountHot> acc_;
  std::vector<std::uint32_t> acc_cap_;

  std::vector<i64> size_;
  std::vector<i64> entry_;
  std::vector<std::uint16_t> market_;  // market id (at most 1024 markets); kNoMarket in a free slot
  std::vector<std::uint32_t> mslot_;   // index of the account in its market's holder list
  std::size_t live_positions_ = 0;
  std::size_t abandoned_slots_ = 0;

  std::vector<std::vector<std::uint32_t>> holders_;  // per market
  UndoLog undo_;
};

}  // namespace deleverage::detail
