// The one undo log of the position store: every operation that can fail part-way (a trade,
// a batch of trades, withdrawals, a waterfall step) records what each position and balance
// was before it changed it, and on failure rolls back to where it started
// (Engine::roll_back), newest change first. An operation that succeeds forgets its entries,
// so the log is empty between calls and is neither saved nor hashed.
//
// Entries hold values, not slots: slots move when blocks grow or positions are removed, so a
// rollback goes through Engine::set_position, which keeps the cached sums, holder lists and
// the kept ADL queues' notes in step. The insurance fund undoes its own pools and ledger
// (InsuranceFund::save_point): the Book does not own them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "deleverage/fixed_point.hpp"
#include "deleverage/market.hpp"

namespace deleverage::detail {

class UndoLog {
 public:
  // An account's state before one change: its position in `market` (lots; entry notional,
  // money) and its balance (money), or only its balance when market is kBalanceOnly.
  struct Entry {
    std::uint32_t account;
    MarketId market;
    i64 size, entry, balance;
  };
  static constexpr MarketId kBalanceOnly = -1;
  // Entries per block. The log grows by whole blocks, never by copying: a crash step logs
  // about two entries per fill (millions), and a doubling vector moved and page-faulted all
  // of them again at each growth (about 5% of the step). A finished operation keeps the
  // first block only, so single trades allocate nothing after the first.
  static constexpr std::size_t kBlock = 4096;

  UndoLog() = default;
  // A copy starts empty: the log belongs to the operation running on the original.
  UndoLog(const UndoLog&) {}
  UndoLog& operator=(const UndoLog&) { return *this; }

  // Where an operation starts: it rolls back to, or forgets from, this mark.
  std::size_t mark() const { return size_; }
  void save_position(std::uint32_t a, MarketId m, i64 size, i64 entry, i64 balance) {
    push(Entry{a, m, size, entry, balance});
  }
  void save_balance(std::uint32_t a, i64 balance) { push(Entry{a, kBalanceOnly, 0, 0, balance}); }
  // Entry i (i < mark()); a rollback walks them from the newest.
  const Entry& at(std::size_t i) const { return blocks_[i / kBlock][i % kBlock]; }
  // The operation that started at `mark` is done (succeeded, or rolled back): drop its entries.
  void forget(std::size_t mark) {
    size_ = mark;
    if (mark == 0 && blocks_.size() > 1) blocks_.resize(1);
  }

 private:
  void push(const Entry& e) {
    if (size_ == blocks_.size() * kBlock)
      blocks_.push_back(std::unique_ptr<Entry[]>(new Entry[kBlock]));  // not zeroed: every entry is written first
    blocks_[size_ / kBlock][size_ % kBlock] = e;
    ++size_;
  }

  std::vector<std::unique_ptr<Entry[]>> blocks_;
  std::size_t size_ = 0;
};

}  // namespace deleverage::detail
