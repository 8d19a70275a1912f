// The accounts a waterfall step touches, and the moves every part of the step makes. Every
// change to an account goes through the book's undo log (Engine::apply_fill,
// Engine::add_to_balance), so a step that throws is rolled back by Engine::run_waterfall.
#include "step_state.hpp"

namespace deleverage {

StepState::~StepState() {
  for (std::uint32_t a : flagged_) e.waterfall_flags()[a] = 0;
  e.release_notes(0);  // a step that threw (WaterfallRun::finish released it otherwise)
}

void StepState::touch(std::uint32_t a) {
  if (flag(a, kTouched)) return;
  set_flag(a, kTouched);
  touched_.push_back(a);
  // only the risk-aware policy reads the start equity (and only it pays for computing it);
  // an account untouched so far is as it was at the start of the step
  if (cfg.policy == Policy::RiskAware) start_equity_of_[a] = equity(a);
}

i64 StepState::start_equity(std::uint32_t a) const {
  const auto it = start_equity_of_.find(a);
  return it == start_equity_of_.end() ? equity(a) : it->second;
}

void StepState::require_representable() const {
  // Once every market is valued at its mark (as the step's revaluation leaves them), an
  // account's cached sums are what Engine::representable would recompute from its positions:
  // checking them spares a pass over every touched account's positions.
  bool cache_current = true;
  for (std::size_t m = 0; m < e.market_table().size(); ++m)
    cache_current = cache_current && e.market_table()[m].mark == e.market_table()[m].valued_mark;
  constexpr std::size_t kAhead = 8;  // the touched accounts are scattered: overlap their misses
  for (std::size_t i = 0; i < touched_.size(); ++i) {
    if (i + kAhead < touched_.size()) __builtin_prefetch(&e.book().hot()[touched_[i + kAhead]]);
    const std::uint32_t a = touched_[i];
    const auto& hot = e.book().hot()[a];
    if (!cache_current || hot.count == 0) {
      if (!e.representable(a)) e.throw_unrepresentable(a, "liquidate");
    } else {
      if (!e.sums_fit(hot.balance, hot.cache)) e.throw_unrepresentable(a, "liquidate");
      e.note_in_range(hot.balance, hot.cache);
    }
  }
}

void StepState::hold_back(detail::KeptAdlQueue& q, const detail::AdlEntry& entry, detail::AdlEntries& put_back) const {
  if (liquidatable_now(entry.account))
    q.parked.push_back(entry);
  else
    put_back.push_back(entry);
}

void StepState::fill(std::uint32_t a, MarketId m, i64 dq, i64 cash) {
  touch(a);
  e.apply_fill(a, m, dq, -cash);
}

i64 StepState::pay_from_fund(std::uint32_t a, MarketId m, i64 wanted) {
  if (wanted <= 0) return 0;
  const int pool = e.market_table()[static_cast<std::size_t>(m)].pool;
  const i64 paid = std::min(wanted, e.fund().available(pool) - promised[static_cast<std::size_t>(pool)]);
  if (paid <= 0) return 0;
  touch(a);
  e.fund().move(e.step(), pool, m, e.book().ids()[a], -paid, LedgerReason::DeficitPayment);
  e.add_to_balance(a, paid);
  e.note_changed(a);
  result.events.add(e.step(), EventKind::FundPayment, e.book().ids()[a], m, 0, 0, paid, 0, pool);
  result.totals.fund_used += paid;
  return paid;
}

std::vector<std::uint32_t> StepState::take_winners_touched() {
  std::vector<std::uint32_t> out = std::move(winners_touched_);
  winners_touched_.clear();
  std::sort(out.begin(), out.end());
  for (std::uint32_t a : out) clear_flag(a, kWinnerTouched);
  return out;
}

}  // namespace deleverage
