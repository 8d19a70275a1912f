// Close mode's last resort: a bankrupt position's lots closed against opposite-side winners
// at the step's ADL price, taken from the kept queue (the queue policy) or allocated once per
// round across the round's demand (the other policies), within the ADL bounds (private to
// the core; see step_state.hpp for where the other parts live).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "policy_allocation.hpp"
#include "step_state.hpp"

namespace deleverage {

class AdlCloses {
 public:
  AdlCloses(StepState& s, PolicyAllocation& allocation) : s_(s), e_(s.e), cfg_(s.cfg), allocation_(allocation) {}

  // Close mode with a shared policy (everything but the queue): the round's ADL demand per
  // market and side is allocated at once, then handed to the bankrupt positions in order.
  bool batched() const { return cfg_.mode == WaterfallMode::Close && cfg_.policy != Policy::Queue; }
  // Closes `lots` of account a's position in m now, against winners from the kept queue; the
  // account receives `value` (what the winners pay at the step's ADL price) and is owed `bk`
  // (the bankruptcy value of the same lots), both signed like its position. Returns the lots
  // closed.
  i64 close(std::uint32_t a, MarketId m, i64 lots, i64 value, i64 bk, i64 exec_price);
  // The same lots left open for the round's shared ADL (batched()).
  void demand(std::uint32_t a, MarketId m, int sign, i64 lots, i64 value, i64 bk, i64 exec_price) {
    demands_.push_back(Demand{a, m, sign, lots, value, bk, exec_price});
  }
  // Whether account a's lots wait for the round's shared ADL (it demanded last).
  bool waiting(std::uint32_t a) const { return !demands_.empty() && demands_.back().account == a; }
  // The round's shared ADL: one allocation per market and side; the executor takes what the
  // winners could not.
  void run_round();

 private:
  // Closes the bankrupt position's lots against the chosen winners (winner, lots) and splits
  // `value` over them by lots. Returns the lots closed.
  i64 apply_takes(std::uint32_t a, MarketId m, int sign, i64 lots, i64 value, i64 bk, i64 exec_price,
                  const std::vector<std::pair<std::uint32_t, i64>>& takes);
  // The most winner b can pay for closing `dq` lots (its side) of market m at no cost: its
  // equity stays at least min(0, its equity now) (docs/waterfall.md "ADL bounds").
  i64 pay_limit(std::uint32_t b, MarketId m, i64 dq) const;
  // Opposite-side winners of market m (not account a), in account creation order, with their
  // sizes (lots) and ids.
  void opposite_winners(std::uint32_t a, MarketId m, int sign, std::vector<std::uint32_t>& who, std::vector<i64>& w,
                        std::vector<i64>& ids);

  StepState& s_;
  Engine& e_;
  const WaterfallConfig& cfg_;
  PolicyAllocation& allocation_;
  struct Demand {  // lots of a bankrupt position waiting for the round's shared ADL
    std::uint32_t account;
    MarketId m;
    int sign;  // of the bankrupt position
    i64 lots, value, bk, exec_price;
  };
  std::vector<Demand> demands_;
  // close()'s scratch, kept so that each of a crash's many closes does not allocate
  std::vector<std::pair<std::uint32_t, i64>> takes_;
  detail::AdlEntries put_back_;
};

}  // namespace deleverage
