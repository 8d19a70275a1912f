// The accounts a waterfall step touches. Every change to them goes through the book's undo
// log (Engine::apply_fill, Engine::add_to_balance), so a step that throws is rolled back by
// Engine::run_waterfall; this part keeps what else the step needs per touched account: the
// list that the representable-range check walks, and the risk-aware policy's start equity.
#include "waterfall_run.hpp"

namespace deleverage {

void WaterfallRun::touch(std::uint32_t a) {
  if (flag(a, kTouched)) return;
  set_flag(a, kTouched);
  touched_.push_back(a);
  // only the risk-aware policy reads the start equity (and only it pays for computing it);
  // an account untouched so far is as it was at the start of the step
  if (cfg_.policy == Policy::RiskAware) start_equity_of_[a] = equity(a);
}

i64 WaterfallRun::start_equity(std::uint32_t a) const {
  const auto it = start_equity_of_.find(a);
  return it == start_equity_of_.end() ? equity(a) : it->second;
}

WaterfallRun::~WaterfallRun() {
  for (std::uint32_t a : flagged_) e_.waterfall_flags()[a] = 0;
  e_.release_notes(0);  // a step that threw (finish() released it otherwise)
}

void WaterfallRun::require_representable() const {
  for (std::uint32_t a : touched_)
    if (!e_.representable(a)) e_.throw_unrepresentable(a, "liquidate");
}

// A close of `dq` lots for which the account receives `cash` (negative: pays).
void WaterfallRun::fill(std::uint32_t a, MarketId m, i64 dq, i64 cash) {
  touch(a);
  e_.apply_fill(a, m, dq, -cash);
}

}  // namespace deleverage
