// One liquidate() call (private to the core): the round loop over the parts of a step (see
// step_state.hpp for where each part lives).
#pragma once
#include <span>
#include <vector>

#include "adl_closes.hpp"
#include "haircuts.hpp"
#include "policy_allocation.hpp"
#include "settlement.hpp"
#include "step_state.hpp"

namespace deleverage {

// Detection (every liquidatable account, worst first, or the accounts given), then rounds:
// each round liquidates its accounts (Settlement), runs the round's shared ADL (AdlCloses)
// and haircuts (Haircuts), and the winners it touched that are now liquidatable form the next
// round (the cascade).
class WaterfallRun {
 public:
  WaterfallRun(Engine& e, const WaterfallConfig& cfg)
      : s_(e, cfg),
        allocation_(s_),
        haircuts_(s_, allocation_),
        adl_(s_, allocation_),
        settlement_(s_, adl_, haircuts_) {}
  WaterfallRun(const WaterfallRun&) = delete;
  WaterfallRun& operator=(const WaterfallRun&) = delete;
  // Start-of-step margins already computed by the step's revaluation pass (moved in).
  void use_start_margins(Engine::StepMargins&& m) {
    start_balance_ = std::move(m.balance);
    start_equity_ = std::move(m.equity);
    start_maintenance_ = std::move(m.maintenance);
    have_start_margins_ = true;
  }

  // The batch step: detection (every liquidatable account, worst first), then the rounds.
  WaterfallResult run();
  // The given accounts only, in the order given (per-account liquidation).
  WaterfallResult run(std::span<const std::uint32_t> accounts);
  // The representable range (docs/semantics.md) for every account the step touched.
  void require_representable() const { s_.require_representable(); }

 private:
  void setup();
  WaterfallResult finish();
  // Liquidates `first` as one round, then the cascade rounds it causes.
  void run_rounds(std::vector<std::uint32_t> first);
  // Queue and random walk liquidate account by account (each its own round), so that a batch
  // step equals the same accounts liquidated one call at a time; the other policies share a
  // round's demand (docs/waterfall.md "Per-account liquidation").
  bool per_account_rounds() const { return s_.cfg.policy == Policy::Queue || s_.cfg.policy == Policy::RandomWalk; }
  // The start-of-step margins, if the revaluation pass did not provide them.
  void compute_start_margins();

  StepState s_;
  PolicyAllocation allocation_;
  Haircuts haircuts_;
  AdlCloses adl_;
  Settlement settlement_;
  column<i64> start_balance_, start_equity_, start_maintenance_;  // account margins at the start of the step
  bool have_start_margins_ = false;
};

}  // namespace deleverage
