// The insurance fund: one shared pool (id 0) and optional pools per market, a ledger of
// every movement, per-step balance history, and a drawdown rule that stops the fund early.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "deleverage/detail/serial.hpp"
#include "deleverage/fixed_point.hpp"

namespace deleverage {

enum class LedgerReason : std::uint8_t {
  Deposit = 0,         // external money into the fund
  LiquidationFee = 1,  // surplus of a liquidation, up to the fee
  DeficitPayment = 2,  // the fund covering a liquidation deficit
};

struct LedgerEntry {
  i64 step;
  std::int32_t pool;
  std::int32_t market;  // -1 when not tied to a market
  i64 account;          // 0 when not tied to an account
  i64 amount;           // signed: into the fund > 0
  LedgerReason reason;
};

// Owned by the Engine (Engine::insurance()); an embedding application reads it and changes
// it through the Engine (insurance_deposit, give_market_own_pool, set_drawdown_rule,
// liquidate). Balances are money units.
class InsuranceFund {
 public:
  InsuranceFund() : balance_(1, 0) {}

  // Adds an empty pool and returns its id.
  int add_pool() {
    balance_.push_back(0);
    if (!opening_.empty()) opening_.push_back(0);
    return static_cast<int>(balance_.size() - 1);
  }
  int pool_count() const { return static_cast<int>(balance_.size()); }
  // A pool's balance (money units); std::out_of_range for an unknown pool.
  i64 balance(int pool) const { return balance_.at(static_cast<std::size_t>(pool)); }
  // Sum over every pool (money units).
  i128 total() const {
    i128 t = 0;
    for (i64 b : balance_) t += b;
    return t;
  }

  // A drawdown rule: the fund pays only while its balance stays at or above
  // (1 - max_drawdown) x its peak over the last `window` steps. max_drawdown in 1e-8 units;
  // max_drawdown = kRateScale (100%) disables the rule.
  void set_drawdown_rule(i64 max_drawdown, int window);
  i64 max_drawdown() const { return max_drawdown_; }
  int drawdown_window() const { return window_; }

  // What the pool may pay now under the drawdown rule.
  i64 available(int pool) const;

  // Marks the start of a step: the peak of the drawdown rule includes this opening balance,
  // so payments within the step cannot walk the floor down.
  void open_step(i64 step) {
    current_step_ = step;
    opening_ = balance_;
  }

  // Moves money; amount > 0 into the pool. Throws ArithmeticOverflow, or InvalidInput if
  // the pool would go negative.
  void move(i64 step, int pool, std::int32_t market, i64 account, i64 amount, LedgerReason reason);

  // Records every pool's balance as the closing balance of `step`.
  void close_step(i64 step);

  const std::vector<LedgerEntry>& ledger() const { return ledger_; }
  // history()[i] = {step, pool, balance}
  struct HistoryRow {
    i64 step;
    std::int32_t pool;
    i64 balance;
  };
  const std::vector<HistoryRow>& history() const { return history_; }
  // Restores balances after a failed operation (ledger and history are truncated too).
  struct Mark {
    std::vector<i64> balance;
    std::size_t ledger_size, history_size;
  };
  Mark save_point() const { return Mark{balance_, ledger_.size(), history_.size()}; }
  void restore(const Mark& m) {
    balance_ = m.balance;
    ledger_.resize(m.ledger_size);
    history_.resize(m.history_size);
  }

  // ---- snapshot and state hash (docs/durability.md) ----
  // The fund's section of the payload: pools, rule, step and opening balances, then the
  // ledger and the history.
  template <class Out>
  void write(Out& w) const {
    w.template put<std::uint32_t>(static_cast<std::uint32_t>(balance_.size()));
    for (i64 b : balance_) w.template put<i64>(b);
    w.template put<i64>(max_drawdown_);
    w.template put<std::int32_t>(window_);
    w.template put<i64>(current_step_);
    w.template put<std::uint32_t>(static_cast<std::uint32_t>(opening_.size()));
    for (i64 b : opening_) w.template put<i64>(b);
    w.template put<u64>(ledger_.size());
    for (const LedgerEntry& x : ledger_) {
      w.template put<i64>(x.step);
      w.template put<std::int32_t>(x.pool);
      w.template put<std::int32_t>(x.market);
      w.template put<i64>(x.account);
      w.template put<i64>(x.amount);
      w.template put<std::uint8_t>(static_cast<std::uint8_t>(x.reason));
    }
    w.template put<u64>(history_.size());
    for (const HistoryRow& x : history_) {
      w.template put<i64>(x.step);
      w.template put<std::int32_t>(x.pool);
      w.template put<i64>(x.balance);
    }
  }
  // Reads the section in two parts (the caller checks the markets' pools in between):
  // the pools, rule, step and opening balances of a fund serving n_markets markets ...
  void read_pools(detail::Reader& r, std::size_t n_markets);
  // ... then the ledger and the history (CorruptSnapshot for an unknown pool, market or reason).
  void read_records(detail::Reader& r, std::size_t n_markets);
  // The fund's part of the state hash.
  void hash(detail::Hasher& g) const;
  // Bytes of its section, about.
  std::size_t snapshot_estimate() const { return 16 * balance_.size() + ledger_.size() * 33 + history_.size() * 20; }

 private:
  std::vector<i64> balance_;
  std::vector<LedgerEntry> ledger_;
  std::vector<HistoryRow> history_;
  i64 max_drawdown_ = kRateScale;
  int window_ = 1;
  i64 current_step_ = 0;
  std::vector<i64> opening_;
};

}  // namespace deleverage
