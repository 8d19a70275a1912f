// Haircut mode's last resort, and what any mode cannot cover: a round's remaining deficits
// socialized as haircuts on winners' profits (per market, then across markets), socialized
// credits to the accounts in deficit, and bad debt (private to the core; see step_state.hpp
// for where the other parts live).
#pragma once
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "policy_allocation.hpp"
#include "step_state.hpp"

namespace deleverage {

class Haircuts {
 public:
  Haircuts(StepState& s, PolicyAllocation& allocation) : s_(s), e_(s.e), cfg_(s.cfg), allocation_(allocation) {}

  // Account a's deficit `amount` (money), caused mostly by market m, waits for the round's end.
  void defer(std::uint32_t a, MarketId m, i64 amount) { pending_.push_back(Pending{a, m, amount}); }
  // Socializes the round's deferred deficits: per market from its winners, then what is left
  // from the winners of every market, then bad debt. Creditors are paid in the order they
  // were deferred (worst first).
  void resolve_round();
  // At the end of the step: the winners a queue haircut took from were set aside in the kept
  // queues; the next step may take from them again, so they are noted as changed.
  void note_haircut_winners();

 private:
  bool fixed_theta() const { return cfg_.theta != kThetaDeficit; }
  // Takes `amount` from winners in market m; returns what was raised.
  i64 haircut(MarketId m, i64 amount);
  // What winner b can still be haircut in market m this step (<= 0: nothing).
  i64 haircut_capacity(std::uint32_t b, MarketId m) const;
  // The queue policy's haircut of `amount` in market m: winners (both sides) in the kept
  // queues' order, each up to its capacity; fills `who` and `x` (amounts) in the market's
  // holder order.
  void queue_haircut(MarketId m, i64 amount, std::vector<std::uint32_t>& who, std::vector<i64>& x);
  // The other policies' haircut: a pass over the market's holders and an allocation.
  void allocated_haircut(MarketId m, i64 amount, std::vector<std::uint32_t>& who, std::vector<i64>& x);
  void credit(std::uint32_t a, MarketId m, i64 amount);

  StepState& s_;
  Engine& e_;
  const WaterfallConfig& cfg_;
  PolicyAllocation& allocation_;
  struct Pending {
    std::uint32_t account;
    MarketId market;
    i64 amount;
  };
  std::vector<Pending> pending_;                          // deficits left for this round's haircuts
  std::unordered_map<std::uint64_t, i64> haircut_taken_;  // (account, market) -> taken this step
  // queue_haircut's scratch, kept so that each of a crash's many haircuts does not allocate
  std::vector<std::pair<std::uint32_t, i64>> takes_;
  detail::AdlEntries put_back_[2];
};

}  // namespace deleverage
