// The state of one liquidate() call, shared by the parts of the waterfall (private to the
// core). Where each part lives:
//   run.cpp          Engine::liquidate and the round loop (detection, worst first, cascade)
//   touched.cpp      the accounts the step touches (its changes go through the book's undo log)
//   adl_queue.cpp    ADL ranking scores, the per-(market, side) queue and queue ADL closes
//   adl_ranking.cpp  the ADL indicator (Engine::adl_ranking)
//   settlement.cpp   one account: bankruptcy values, partial close, surplus offsets and fund
//                    plan, executor and ADL fills, fees, fund payments, settlement
//   last_resort.cpp  policies that allocate across a round (pro-rata, the kernel policies),
//                    haircuts and bad debt
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

// One winner in an ADL queue.
struct QueueEntry {
  i64 score;
  i64 id;
  std::uint32_t account;
};
// max-heap by score, ties to the smaller account id
struct QueueOrder {
  bool operator()(const QueueEntry& x, const QueueEntry& y) const {
    return x.score < y.score || (x.score == y.score && x.id > y.id);
  }
};
}  // namespace waterfall_detail

using waterfall_detail::abs64;
using waterfall_detail::clamp_i64;
using waterfall_detail::QueueEntry;
using waterfall_detail::QueueOrder;

// State of one liquidate() call: the accounts it touched, the round being liquidated, and
// the result being built (Engine::run_waterfall rolls a failed call back). The ADL queues are the engine's (kept
// between calls).
class WaterfallRun {
 public:
  WaterfallRun(Engine& e, const WaterfallConfig& cfg) : e_(e), cfg_(cfg) {}
  ~WaterfallRun();
  WaterfallRun(const WaterfallRun&) = delete;
  WaterfallRun& operator=(const WaterfallRun&) = delete;
  // Start-of-step margins already computed by the step's revaluation pass (moved in).
  void use_start_margins(Engine::StepMargins&& m) {
    start_balance_ = std::move(m.balance);
    start_equity_ = std::move(m.equity);
    start_maintenance_ = std::move(m.maintenance);
    have_start_margins_ = true;
  }

  // The batch step: detection (every liquidatable account, worst first), then run_account
  // or one shared round, as the policy's rounds go.
  WaterfallResult run();
  // The given accounts only, in the order given (per-account liquidation).
  WaterfallResult run(std::span<const std::uint32_t> accounts);
  // The representable range (docs/semantics.md) for every account the step touched.
  void require_representable() const;

 private:
  struct Closing {  // one position of the account being liquidated
    MarketId m;
    i64 q, mark_value, bk_value, exec_price, exec_value, deficit;
    i64 entry = 0;  // entry notional (money): the loss at the mark is entry - mark_value for either side
  };

  void touch(std::uint32_t a);
  void setup();
  WaterfallResult finish();
  // Liquidates `first` as one round, then the cascade rounds it causes.
  void run_rounds(std::vector<std::uint32_t> first);
  // Queue and random walk liquidate account by account (each its own round), so that a batch
  // step equals the same accounts liquidated one call at a time; the other policies share a
  // round's demand (docs/waterfall.md "Per-account liquidation").
  bool per_account_rounds() const { return cfg_.policy == Policy::Queue || cfg_.policy == Policy::RandomWalk; }
  bool liquidatable_now(std::uint32_t a) const { return e_.book().hot()[a].count > 0 && margin(a).liquidatable; }
  // Account a's margin now. An account the step pushed out of the representable range is
  // refused by name here rather than by a bare "equity does not fit" (the step rolls back).
  AccountMargin margin(std::uint32_t a) const {
    try {
      return e_.margin_from_sums(e_.book().hot()[a].balance, e_.book().hot()[a].cache);
    } catch (const ArithmeticOverflow&) {
      e_.throw_unrepresentable(a, "liquidate");
    }
  }
  // Account a's equity at the start of the step (before the step touched it).
  i64 start_equity(std::uint32_t a) const;
  // Scratch flags in the engine's wf_flags_ (cleared by the destructor).
  enum : std::uint8_t { kTouched = 1, kWinnerTouched = 2, kCounted = 4, kExcluded = 8, kSettledFlat = 16 };
  bool flag(std::uint32_t a, std::uint8_t f) const { return (e_.waterfall_flags()[a] & f) != 0; }
  void set_flag(std::uint32_t a, std::uint8_t f) {
    if (e_.waterfall_flags()[a] == 0) flagged_.push_back(a);
    e_.waterfall_flags()[a] |= f;
  }
  void clear_flag(std::uint32_t a, std::uint8_t f) { e_.waterfall_flags()[a] &= static_cast<std::uint8_t>(~f); }
  void fill(std::uint32_t a, MarketId m, i64 dq, i64 cash_to_account);
  void liquidate_account(std::uint32_t a);
  bool try_partial(std::uint32_t a, std::vector<Closing>& cl);
  std::vector<Closing> closings(std::uint32_t a, bool with_executor);
  i64 pay_from_fund(std::uint32_t a, MarketId m, i64 wanted);
  void charge_fee(std::uint32_t a, const std::vector<Closing>& cl, i64 surplus);
  // `reserved`: part of the debt kept for the haircuts even if the fund could pay it (a fixed
  // theta in haircut mode).
  void settle(std::uint32_t a, const std::vector<Closing>& cl, const std::vector<i64>& fund_planned, i64 reserved = 0);
  void settle_flat(std::uint32_t a);
  void credit(std::uint32_t a, MarketId m, i64 amount);
  void mark_winner(std::uint32_t b) {
    if (!flag(b, kWinnerTouched)) touched_list_.push_back(b);
    set_flag(b, kWinnerTouched);
    if (!flag(b, kCounted)) {
      set_flag(b, kCounted);
      ++result_.totals.accounts_touched;
    }
  }
  // `value`: what the winners pay at the step's ADL price; `bk`: the bankruptcy value of the
  // same lots (what leaves the account at zero). Both signed like the account's position.
  i64 adl_close(std::uint32_t a, MarketId m, i64 lots, i64 value, i64 bk, i64 exec_price);
  void hold_back(detail::KeptAdlQueue& q, const detail::AdlEntry& e, detail::AdlEntries& put_back);
  // Closes the bankrupt position's lots against the chosen winners (winner, lots) and splits
  // `value` over them by lots. Returns the lots closed.
  i64 apply_adl_takes(std::uint32_t a, MarketId m, int sign, i64 lots, i64 value, i64 bk, i64 exec_price,
                      const std::vector<std::pair<std::uint32_t, i64>>& takes);
  // The most winner b can pay for closing `dq` lots (its side) of market m at no cost: its
  // equity stays at least min(0, its equity now) (docs/waterfall.md "ADL bounds").
  i64 adl_limit(std::uint32_t b, MarketId m, i64 dq) const;
  // Opposite-side winners of market m (not account a), in account creation order, with their
  // sizes (lots) and ids.
  void opposite_winners(std::uint32_t a, MarketId m, int sign, std::vector<std::uint32_t>& who, std::vector<i64>& w,
                        std::vector<i64>& ids);
  // Close mode with a shared policy (everything but the queue): the round's ADL demand per
  // market and side is allocated at once, then handed to the bankrupt positions in order.
  bool batched_adl() const { return cfg_.mode == WaterfallMode::Close && cfg_.policy != Policy::Queue; }
  void run_round_adl();
  // Policies served by the allocation kernel (capped/risk-aware pro-rata, lot min-max,
  // random walk): splits `budget` over winners `who` (creation order) with `capacity`.
  std::vector<i64> allocate_by_policy(i64 budget, const std::vector<std::uint32_t>& who,
                                      const std::vector<i64>& capacity, MarketId m, bool lots);
  // `cap` is a hard limit per step (docs/waterfall.md section 5): a winner offered again in a
  // later pass or round keeps the allowance floor(cap x its first capacity) minus what it
  // already gave; allocations are clipped to it.
  void clip_to_cap_allowance(std::vector<i64>& x, const std::vector<std::uint32_t>& who,
                             const std::vector<i64>& capacity, MarketId m, bool lots);
  bool uses_kernel() const {
    return cfg_.policy != Policy::Queue && cfg_.policy != Policy::ProRata && cfg_.policy != Policy::FundingIndex &&
           cfg_.policy != Policy::None;
  }
  bool fixed_theta() const { return cfg_.theta != kThetaDeficit; }
  i64 haircut(MarketId m, i64 amount);
  // What winner b can still be haircut in market m this step (<= 0: nothing).
  i64 haircut_capacity(std::uint32_t b, MarketId m) const;
  // The queue policy's haircut of `amount` in market m: winners (both sides) in the kept
  // queues' order, each up to its capacity; fills `who` and `x` (amounts) in the market's
  // holder order.
  void queue_haircut(MarketId m, i64 amount, std::vector<std::uint32_t>& who, std::vector<i64>& x);
  // The other policies' haircut: a pass over the market's holders and an allocation.
  void allocated_haircut(MarketId m, i64 amount, std::vector<std::uint32_t>& who, std::vector<i64>& x);
  void resolve_pending_haircuts();
  // A winner is neither the executor's account, nor an account of the round being liquidated,
  // nor liquidatable itself (it waits for its own liquidation).
  bool eligible_winner(std::uint32_t a) const {
    return a != exec_account_ && !flag(a, kExcluded) && !margin(a).liquidatable;
  }
  i64 equity(std::uint32_t a) const { return margin(a).equity; }

  Engine& e_;
  const WaterfallConfig& cfg_;
  WaterfallResult result_;
  std::uint32_t exec_account_ = AccountIndex::kNone;
  column<i64> start_balance_, start_equity_, start_maintenance_;  // account margins at the start of the step
  bool have_start_margins_ = false;
  std::vector<std::uint32_t> flagged_;                      // accounts with a scratch flag set
  std::vector<std::uint32_t> touched_list_;                 // accounts with kWinnerTouched set
  std::vector<std::uint32_t> touched_;                      // accounts with kTouched set
  std::unordered_map<std::uint32_t, i64> start_equity_of_;  // touched account -> equity before (risk-aware only)
  std::unordered_map<std::uint64_t, i64> haircut_taken_;    // (account, market) -> taken this step
  struct CapUse {
    i64 allowance, used;
  };
  std::unordered_map<std::uint64_t, CapUse> cap_use_;        // (account, market, lots or money) -> this step
  std::vector<std::pair<std::uint32_t, MarketId>> adl_log_;  // (winner, market) of every ADL close this round
  // adl_close's and queue_haircut's scratch, kept so that each of a crash's many closes and
  // haircuts does not allocate
  std::vector<std::pair<std::uint32_t, i64>> adl_takes_;
  detail::AdlEntries adl_put_back_;
  detail::AdlEntries haircut_put_back_[2];
  struct Pending {
    std::uint32_t account;
    MarketId market;
    i64 amount;
  };
  std::vector<Pending> pending_;  // deficits left for this round's haircuts
  struct AdlDemand {              // lots of a bankrupt position waiting for the round's shared ADL
    std::uint32_t account;
    MarketId m;
    int sign;  // of the bankrupt position
    i64 lots, value, bk, exec_price;
  };
  struct DeferredSettlement {  // an account whose settlement waits for the round's ADL
    std::uint32_t account;
    std::vector<Closing> closings;
    std::vector<i64> fund_planned;
    i64 reserved;
  };
  std::vector<AdlDemand> demands_;
  std::vector<DeferredSettlement> deferred_;
  std::vector<i64> promised_;       // per pool: fund payments planned for accounts whose settlement waits
  std::vector<i64> matching_pool_;  // per pool, fixed theta: what deficit matching would have left
  int rounds_ = 0;
  i64 round_key_ = 0;               // id of the account a run_rounds call started from (random walk seeds)
  std::uint64_t random_walks_ = 0;  // kernel allocations so far in this run_rounds call (random walk seeds)
};

}  // namespace deleverage
