#include "deleverage/insurance.hpp"

#include <algorithm>

namespace deleverage {

void InsuranceFund::set_drawdown_rule(i64 max_drawdown, int window) {
  if (max_drawdown < 0 || max_drawdown > kRateScale) throw InvalidInput("max_drawdown must be between 0 and 1");
  if (window < 1) throw InvalidInput("window must be at least 1 step");
  max_drawdown_ = max_drawdown;
  window_ = window;
}

i64 InsuranceFund::available(int pool) const {
  const i64 now = balance(pool);
  if (max_drawdown_ >= kRateScale) return now;
  // peak: now, the balance the current step opened with, and the closing balances of the
  // last `window` steps
  i64 peak = now;
  if (static_cast<std::size_t>(pool) < opening_.size()) peak = std::max(peak, opening_[static_cast<std::size_t>(pool)]);
  for (auto it = history_.rbegin(); it != history_.rend() && it->step > current_step_ - 1 - window_; ++it)
    if (it->pool == pool) peak = std::max(peak, it->balance);
  // floor = ceil(peak * (1 - max_drawdown)): the fund stops at or above it
  const i128 floor_amount = ceil_div(static_cast<i128>(peak) * (kRateScale - max_drawdown_), kRateScale);
  return now > floor_amount ? static_cast<i64>(now - floor_amount) : 0;
}

void InsuranceFund::move(i64 step, int pool, std::int32_t market, i64 account, i64 amount, LedgerReason reason) {
  if (pool < 0 || pool >= pool_count()) throw InvalidInput("unknown insurance pool " + std::to_string(pool));
  i64 next;
  if (__builtin_add_overflow(balance_[static_cast<std::size_t>(pool)], amount, &next))
    throw ArithmeticOverflow("insurance pool balance overflows 64 bits");
  if (next < 0) throw InvalidInput("insurance pool " + std::to_string(pool) + " cannot go below zero");
  balance_[static_cast<std::size_t>(pool)] = next;
  ledger_.push_back(LedgerEntry{step, pool, market, account, amount, reason});
}

void InsuranceFund::close_step(i64 step) {
  for (int p = 0; p < pool_count(); ++p) history_.push_back(HistoryRow{step, p, balance_[static_cast<std::size_t>(p)]});
}

}  // namespace deleverage
