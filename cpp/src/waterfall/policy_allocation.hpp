// The policies the allocation kernel serves (capped and risk-aware pro-rata, lot min-max,
// random walk) as a waterfall step uses them, with the step's hard cap per winner (private
// to the core; see step_state.hpp for where the other parts live).
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "step_state.hpp"

namespace deleverage {

class PolicyAllocation {
 public:
  explicit PolicyAllocation(StepState& s) : s_(s), e_(s.e), cfg_(s.cfg) {}

  // Whether the step's policy allocates through the kernel (else: the queue, pro-rata through
  // the water-fill, the funding index, or no last resort).
  bool uses_kernel() const {
    return cfg_.policy != Policy::Queue && cfg_.policy != Policy::ProRata && cfg_.policy != Policy::FundingIndex &&
           cfg_.policy != Policy::None;
  }
  // A liquidation starts from the account with id `key`: the random walk's seeds are keyed by
  // it (not by the step), so a batch step and per-account calls draw the same.
  void start_liquidation(i64 key) {
    round_key_ = key;
    random_walks_ = 0;
  }
  // Splits `budget` over winners `who` (creation order) with `capacity` in market m; `lots`:
  // the amounts are lots (ADL) rather than money (haircuts).
  std::vector<i64> allocate(i64 budget, const std::vector<std::uint32_t>& who, const std::vector<i64>& capacity,
                            MarketId m, bool lots);

 private:
  // `cap` is a hard limit per step (docs/waterfall.md section 5): a winner offered again in a
  // later pass or round keeps the allowance floor(cap x its first capacity) minus what it
  // already gave; allocations are clipped to it.
  void clip_to_cap_allowance(std::vector<i64>& x, const std::vector<std::uint32_t>& who,
                             const std::vector<i64>& capacity, MarketId m, bool lots);

  StepState& s_;
  Engine& e_;
  const WaterfallConfig& cfg_;
  struct CapUse {
    i64 allowance, used;
  };
  std::unordered_map<std::uint64_t, CapUse> cap_use_;  // (account, market, lots or money) -> this step
  i64 round_key_ = 0;                                  // see start_liquidation
  std::uint64_t random_walks_ = 0;                     // kernel allocations since start_liquidation
};

}  // namespace deleverage
