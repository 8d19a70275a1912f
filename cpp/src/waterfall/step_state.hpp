// What the parts of one waterfall step share (private to the core): the engine and the
// configuration, the result being built, the executor, the per-account scratch flags, the
// accounts the step touched, and the moves every part makes: a fill, a fund payment, a
// winner noted. Where the parts live:
//   run.cpp                WaterfallRun: Engine::liquidate and the round loop (detection,
//                          worst first, the cascade)
//   step_state.cpp         this state: the touched accounts, fills and fund payments
//   settlement.cpp         Settlement: one account's liquidation (bankruptcy values, partial
//                          close, fund plan, executor fills, fees, settlement)
//   adl_closes.cpp         AdlCloses: ADL closes against winners, from the kept queue or the
//                          round's shared allocation
//   haircuts.cpp           Haircuts: the round's deficits socialized as haircuts, bad debt
//   policy_allocation.cpp  PolicyAllocation: the allocation kernel's policies, the cap
//   adl_queue.cpp          the engine's kept ADL queues and ranking scores
//   adl_ranking.cpp        the ADL indicator (Engine::adl_ranking)
// docs/waterfall.md is the specification; comments here say why, not what.
#pragma once
#include <algorithm>
#include <limits>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "deleverage/engine.hpp"

namespace deleverage {

namespace waterfall_detail {
inline i64 abs64(i64 v) { return v < 0 ? -v : v; }
inline i64 clamp_i64(i128 v) {
  if (v > std::numeric_limits<i64>::max()) return std::numeric_limits<i64>::max();
  if (v < std::numeric_limits<i64>::min() + 1) return std::numeric_limits<i64>::min() + 1;
  return static_cast<i64>(v);
}
}  // namespace waterfall_detail

using waterfall_detail::abs64;
using waterfall_detail::clamp_i64;

// The state one liquidate() call shares between its parts. Changes to accounts go through the
// engine's undo log (Engine::run_waterfall rolls a failed call back); the ADL queues are the
// engine's (kept between calls).
struct StepState {
  StepState(Engine& engine, const WaterfallConfig& config) : e(engine), cfg(config) {}
  ~StepState();  // clears the scratch flags it set
  StepState(const StepState&) = delete;
  StepState& operator=(const StepState&) = delete;

  Engine& e;
  const WaterfallConfig& cfg;
  WaterfallResult result;
  std::uint32_t exec_account = AccountIndex::kNone;
  bool whole_book = false;    // every liquidatable account: most markets see closes on both sides
  std::vector<i64> promised;  // per pool: fund payments planned for accounts whose settlement waits
  std::vector<std::pair<std::uint32_t, MarketId>> adl_log;  // (winner, market) of every ADL close this round

  // Scratch flags in the engine's waterfall_flags() (cleared by the destructor).
  enum : std::uint8_t { kTouched = 1, kWinnerTouched = 2, kCounted = 4, kExcluded = 8, kSettledFlat = 16 };
  bool flag(std::uint32_t a, std::uint8_t f) const { return (e.waterfall_flags()[a] & f) != 0; }
  void set_flag(std::uint32_t a, std::uint8_t f) {
    if (e.waterfall_flags()[a] == 0) flagged_.push_back(a);
    e.waterfall_flags()[a] |= f;
  }
  void clear_flag(std::uint32_t a, std::uint8_t f) { e.waterfall_flags()[a] &= static_cast<std::uint8_t>(~f); }

  // Notes account a as touched by the step (before its first change): the end-of-step range
  // check covers it, and the risk-aware policy keeps its start equity.
  void touch(std::uint32_t a);
  // Account a's equity at the start of the step (before the step touched it).
  i64 start_equity(std::uint32_t a) const;
  // The representable range (docs/semantics.md) for every account the step touched.
  void require_representable() const;

  // Account a's margin now. An account the step pushed out of the representable range is
  // refused by name here rather than by a bare "equity does not fit" (the step rolls back).
  AccountMargin margin(std::uint32_t a) const {
    try {
      return e.margin_from_sums(e.book().hot()[a].balance, e.book().hot()[a].cache);
    } catch (const ArithmeticOverflow&) {
      e.throw_unrepresentable(a, "liquidate");
    }
  }
  i64 equity(std::uint32_t a) const { return margin(a).equity; }
  bool liquidatable_now(std::uint32_t a) const { return e.book().hot()[a].count > 0 && margin(a).liquidatable; }
  // A winner is neither the executor's account, nor an account of the round being liquidated,
  // nor liquidatable itself (it waits for its own liquidation).
  bool eligible_winner(std::uint32_t a) const {
    return a != exec_account && !flag(a, kExcluded) && !margin(a).liquidatable;
  }
  // A popped queue entry that is not a winner now: a liquidatable account is parked (see
  // `parked` in detail/adl_queue.hpp), one excluded by this call only (its executor, its
  // round) goes back with `put_back`.
  void hold_back(detail::KeptAdlQueue& q, const detail::AdlEntry& entry, detail::AdlEntries& put_back) const;

  // A close of `dq` lots for which the account receives `cash` (negative: pays).
  void fill(std::uint32_t a, MarketId m, i64 dq, i64 cash);
  // Pays account a up to `wanted` from market m's pool, less what is promised to accounts
  // whose settlement waits; returns what was paid.
  i64 pay_from_fund(std::uint32_t a, MarketId m, i64 wanted);
  // A winner the round deleveraged or haircut: checked for the cascade after the round.
  void mark_winner(std::uint32_t b) {
    if (!flag(b, kWinnerTouched)) winners_touched_.push_back(b);
    set_flag(b, kWinnerTouched);
    if (!flag(b, kCounted)) {
      set_flag(b, kCounted);
      ++result.totals.accounts_touched;
    }
  }
  // The winners marked since the last call, in account order (their flags cleared).
  std::vector<std::uint32_t> take_winners_touched();

 private:
  std::vector<std::uint32_t> flagged_;                      // accounts with a scratch flag set
  std::vector<std::uint32_t> winners_touched_;              // accounts with kWinnerTouched set
  std::vector<std::uint32_t> touched_;                      // accounts with kTouched set
  std::unordered_map<std::uint32_t, i64> start_equity_of_;  // touched account -> equity before (risk-aware only)
};

}  // namespace deleverage
