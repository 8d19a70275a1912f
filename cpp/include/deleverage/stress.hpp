// Stress paths: the loss waterfall stepped through given mark paths, entirely in the core.
//
// For each path the base engine is copied, then every step sets all marks from the path's
// row and runs one waterfall step (Engine::liquidate). Nothing is kept per event: each
// step's totals are recorded as one row of int64 series, and every winner's losses are
// added to per-account accumulators as the events are read. Paths run in parallel over
// threads, each on its own copy; the result does not depend on the thread count (integer
// sums and maxima only).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "deleverage/engine.hpp"

namespace deleverage {

// Per-step series of one run, row-major [path][step] (fund_balance: [path][step][pool]).
// Money in units of 10^-money_decimals.
struct StressSeries {
  std::size_t paths = 0, steps = 0, pools = 0;
  std::vector<i64> deficit;              // deficit of the step's liquidations before the fund
  std::vector<i64> fund_used;            // paid by the insurance fund
  std::vector<i64> fund_fees;            // liquidation fees received by the fund
  std::vector<i64> bad_debt;             // left uncovered
  std::vector<i64> liquidated_accounts;  // accounts liquidated in the step
  std::vector<i64> partial_liquidations;
  std::vector<i64> adl_notional;  // |value| of ADL closes
  std::vector<i64> adl_closes;
  std::vector<i64> haircut_total;     // taken from winners in haircut mode
  std::vector<i64> accounts_touched;  // distinct winners deleveraged or haircut
  std::vector<i64> winner_loss;       // ADL loss against the mark + haircuts, all winners
  std::vector<i64> fund_balance;      // closing balance of each pool
};

// Per-account outcomes over all paths, in the base engine's account order.
struct StressAccounts {
  std::vector<i64> loss_total;        // sum over paths of ADL loss vs mark + haircuts (money)
  std::vector<i64> loss_max;          // largest such loss in one path (money)
  std::vector<i64> paths_hit;         // paths in which the account paid (ADL or haircut)
  std::vector<i64> paths_liquidated;  // paths in which the account was liquidated
  std::vector<i64> final_equity_min;  // lowest equity at the end of a path (money)
};

struct StressRun {
  StressSeries series;
  StressAccounts accounts;
  std::vector<i64> fund_start;  // each pool's balance before the path (money)
};

// Runs `paths` paths of `steps` steps. marks holds paths * steps * market_count() ticks,
// row-major [path][step][market], every one > 0. threads = 0 uses every hardware thread;
// with more than one path in flight each path's engine checks margins on one thread.
// Throws InvalidInput for bad marks (naming path, step and market); the base is not changed.
StressRun run_stress(const Engine& base, const WaterfallConfig& config, std::span<const i64> marks, std::size_t paths,
                     std::size_t steps, int threads = 0);

}  // namespace deleverage
