// The stress path runner against the same steps taken by hand with set_marks + liquidate,
// its independence from the thread count, and its refusal of bad marks.
#include <gtest/gtest.h>

#include <vector>

#include "deleverage/stress.hpp"
#include "test_helpers.hpp"

namespace deleverage {
namespace {

using testing::dep;
using testing::mark;

MarketSpec market(const std::string& symbol) {
  MarketSpec s;
  s.symbol = symbol;
  s.qty_decimals = 3;
  s.price_decimals = 2;
  s.maintenance_rate = 500'000;  // 0.5%
  s.initial_rate = 1'000'000;    // 1%
  s.liquidation_fee_rate = 500'000;
  return s;
}

// Two markets; accounts 1..40 alternate long and short 1.000 lot-units at 100.00 with thin
// collateral, account 0 is a deep-pocketed market maker (the executor).
Engine book() {
  Engine e(6, 1);
  e.add_market(market("A"));
  e.add_market(market("B"));
  mark(e, 0, 10'000);
  mark(e, 1, 5'000);
  dep(e, 0, 1'000'000'000'000);
  std::vector<i64> acc, sz, px;
  std::vector<MarketId> mk;
  for (i64 a = 1; a <= 40; ++a) {
    dep(e, a, (3 + a % 7) * 1'000'000);  // $3..$9 against $100 (A) and $50 (B) of notional
    const i64 side = a % 2 ? 1 : -1;
    acc.insert(acc.end(), {a, a});
    mk.insert(mk.end(), {0, 1});
    sz.insert(sz.end(), {side * 1000, -side * 1000});
    px.insert(px.end(), {10'000, 5'000});
  }
  e.load_positions(acc, mk, sz, px, i64{0});
  e.insurance_deposit(2'000'000, 0);
  return e;
}

std::vector<i64> marks_for(std::size_t paths, std::size_t steps) {
  std::vector<i64> m;
  for (std::size_t p = 0; p < paths; ++p)
    for (std::size_t s = 0; s < steps; ++s) {
      const i64 k = static_cast<i64>(p * 7 + s * 13) % 11 - 5;  // deterministic zig-zag
      m.push_back(10'000 + k * 150 - static_cast<i64>(s) * 40);
      m.push_back(5'000 - k * 60 + static_cast<i64>(p) * 30);
    }
  return m;
}

WaterfallConfig config(Policy policy, WaterfallMode mode) {
  WaterfallConfig c;
  c.executor.account = 0;
  c.executor.slippage_rate = 200'000;  // 20 bp
  c.policy = policy;
  c.mode = mode;
  return c;
}

TEST(Stress, SeriesEqualStepsTakenByHand) {
  const Engine base = book();
  const std::size_t paths = 3, steps = 8;
  const std::vector<i64> m = marks_for(paths, steps);
  for (auto [policy, mode] :
       {std::pair{Policy::Queue, WaterfallMode::Close}, std::pair{Policy::ProRata, WaterfallMode::Haircut}}) {
    const WaterfallConfig cfg = config(policy, mode);
    const StressRun r = run_stress(base, cfg, m, paths, steps, 2);
    i64 liquidated = 0;
    for (std::size_t p = 0; p < paths; ++p) {
      Engine e(base);
      for (std::size_t s = 0; s < steps; ++s) {
        const std::size_t row = p * steps + s;
        const MarketId ids[2] = {0, 1};
        e.set_marks(ids, std::span<const i64>(m).subspan(row * 2, 2));
        const WaterfallTotals t = e.liquidate(cfg).totals;
        EXPECT_EQ(r.series.deficit[row], t.deficit);
        EXPECT_EQ(r.series.fund_used[row], t.fund_used);
        EXPECT_EQ(r.series.bad_debt[row], t.bad_debt);
        EXPECT_EQ(r.series.liquidated_accounts[row], t.liquidated_accounts);
        EXPECT_EQ(r.series.adl_notional[row], t.adl_notional);
        EXPECT_EQ(r.series.haircut_total[row], t.haircut_total);
        EXPECT_EQ(r.series.fund_balance[row], e.insurance().balance(0));
        liquidated += t.liquidated_accounts;
      }
      e.check_invariants();
    }
    EXPECT_GT(liquidated, 0);  // the marks do liquidate someone
    EXPECT_EQ(base.step(), 0);
  }
}

TEST(Stress, ResultDoesNotDependOnThreads) {
  const Engine base = book();
  const std::vector<i64> m = marks_for(5, 6);
  const WaterfallConfig cfg = config(Policy::Queue, WaterfallMode::Close);
  const StressRun a = run_stress(base, cfg, m, 5, 6, 1);
  const StressRun b = run_stress(base, cfg, m, 5, 6, 3);
  EXPECT_EQ(a.series.winner_loss, b.series.winner_loss);
  EXPECT_EQ(a.series.fund_balance, b.series.fund_balance);
  EXPECT_EQ(a.accounts.loss_total, b.accounts.loss_total);
  EXPECT_EQ(a.accounts.loss_max, b.accounts.loss_max);
  EXPECT_EQ(a.accounts.paths_liquidated, b.accounts.paths_liquidated);
  EXPECT_EQ(a.accounts.final_equity_min, b.accounts.final_equity_min);
}

// A sink receives exactly the movements the column log would hold, and the log stays empty.
TEST(Stress, EventSinkSeesTheColumnLog) {
  struct Recorder final : EventSink {
    std::vector<std::vector<i64>> rows;
    void add(i64 st, EventKind k, i64 acc, MarketId m, i64 cp, i64 sz, i64 amt, i64 px, std::int32_t pl,
             i64 xpx) override {
      rows.push_back({st, static_cast<i64>(k), acc, m, cp, sz, amt, px, pl, xpx});
    }
  };
  Engine a = book(), b = book();
  Recorder rec;
  b.set_event_sink(&rec);
  const MarketId ids[2] = {0, 1};
  const i64 crash[2] = {9'000, 5'600};
  a.set_marks(ids, crash);
  b.set_marks(ids, crash);
  const WaterfallConfig cfg = config(Policy::Queue, WaterfallMode::Close);
  const WaterfallResult ra = a.liquidate(cfg), rb = b.liquidate(cfg);
  ASSERT_GT(ra.events.size_(), 0u);
  EXPECT_EQ(rb.events.size_(), 0u);
  ASSERT_EQ(rec.rows.size(), ra.events.size_());
  for (std::size_t i = 0; i < rec.rows.size(); ++i) {
    const WaterfallEvents& ev = ra.events;
    EXPECT_EQ(rec.rows[i], (std::vector<i64>{ev.step[i], ev.kind[i], ev.account[i], ev.market[i], ev.counterparty[i],
                                             ev.size[i], ev.amount[i], ev.price[i], ev.pool[i], ev.exec_price[i]}));
  }
  EXPECT_EQ(ra.totals.adl_notional, rb.totals.adl_notional);
}

TEST(Stress, BadMarksAreRefused) {
  const Engine base = book();
  const WaterfallConfig cfg = config(Policy::Queue, WaterfallMode::Close);
  std::vector<i64> m = marks_for(2, 2);
  m[5] = 0;  // path 1, step 0, market 1
  EXPECT_THROW(run_stress(base, cfg, m, 2, 2, 1), InvalidInput);
  m.pop_back();
  EXPECT_THROW(run_stress(base, cfg, m, 2, 2, 1), InvalidInput);
  EXPECT_THROW(run_stress(base, cfg, std::vector<i64>{}, 1, 0, 1), InvalidInput);
}

}  // namespace
}  // namespace deleverage
