#include "deleverage/insurance.hpp"

#include <algorithm>
#include <limits>

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

// ------------------------------------------------------------------ snapshot and state hash

void InsuranceFund::read_pools(detail::Reader& r, std::size_t n_markets) {
  using detail::corrupt;
  const std::size_t n_pools = r.count<std::uint32_t>(8, n_markets + 1, "pool count");
  if (n_pools == 0) corrupt("no insurance pool");
  balance_.resize(n_pools);
  for (i64& b : balance_) {
    b = r.get<i64>();
    if (b < 0) corrupt("negative insurance pool balance");
  }
  const i64 max_drawdown = r.get<i64>();
  const std::int32_t window = r.get<std::int32_t>();
  set_drawdown_rule(max_drawdown, window);
  current_step_ = r.get<i64>();
  const std::size_t n_opening = r.count<std::uint32_t>(8, n_pools, "opening balances");
  if (n_opening != 0 && n_opening != n_pools)
    corrupt("opening balances for " + std::to_string(n_opening) + " of " + std::to_string(n_pools) + " pools");
  opening_.resize(n_opening);
  for (i64& b : opening_) b = r.get<i64>();
}

void InsuranceFund::read_records(detail::Reader& r, std::size_t n_markets) {
  using detail::corrupt;
  constexpr std::size_t kLedgerBytes = 8 + 4 + 4 + 8 + 8 + 1;
  constexpr std::size_t kHistoryBytes = 8 + 4 + 8;
  const std::size_t n_pools = balance_.size();
  const std::size_t n_ledger = r.count<u64>(kLedgerBytes, std::numeric_limits<std::size_t>::max(), "ledger length");
  ledger_.resize(n_ledger);
  for (LedgerEntry& x : ledger_) {
    x.step = r.get<i64>();
    x.pool = r.get<std::int32_t>();
    x.market = r.get<std::int32_t>();
    x.account = r.get<i64>();
    x.amount = r.get<i64>();
    const std::uint8_t reason = r.get<std::uint8_t>();
    if (x.pool < 0 || static_cast<std::size_t>(x.pool) >= n_pools) corrupt("ledger entry with unknown pool");
    if (x.market < -1 || x.market >= static_cast<std::int32_t>(n_markets)) corrupt("ledger entry with unknown market");
    if (reason > static_cast<std::uint8_t>(LedgerReason::DeficitPayment)) corrupt("ledger entry with unknown reason");
    x.reason = static_cast<LedgerReason>(reason);
  }
  const std::size_t n_history = r.count<u64>(kHistoryBytes, std::numeric_limits<std::size_t>::max(), "history length");
  history_.resize(n_history);
  for (HistoryRow& x : history_) {
    x.step = r.get<i64>();
    x.pool = r.get<std::int32_t>();
    x.balance = r.get<i64>();
    if (x.pool < 0 || static_cast<std::size_t>(x.pool) >= n_pools) corrupt("history row with unknown pool");
  }
}

void InsuranceFund::hash(detail::Hasher& g) const {
  g.add(balance_.size());
  for (i64 b : balance_) g.add(static_cast<u64>(b));
  g.add(static_cast<u64>(max_drawdown_));
  g.add(static_cast<u64>(window_));
  g.add(ledger_.size());
  for (const LedgerEntry& x : ledger_) {
    g.add(static_cast<u64>(x.step));
    g.add(static_cast<u64>(x.pool));
    g.add(static_cast<u64>(x.market));
    g.add(static_cast<u64>(x.account));
    g.add(static_cast<u64>(x.amount));
    g.add(static_cast<u64>(x.reason));
  }
  g.add(history_.size());
  for (const HistoryRow& x : history_) {
    g.add(static_cast<u64>(x.step));
    g.add(static_cast<u64>(x.pool));
    g.add(static_cast<u64>(x.balance));
  }
}

}  // namespace deleverage
