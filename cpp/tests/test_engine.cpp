// Hand-computed cases for the engine (numbers derived in the comments from docs/semantics.md).
#include <gtest/gtest.h>

#include <vector>

#include "deleverage/engine.hpp"
#include "test_helpers.hpp"

using namespace deleverage;
using deleverage::testing::dep;
using deleverage::testing::mark;

namespace {
// BTC: lots of 0.001, ticks of 0.1, 5% maintenance, 10% initial. money_decimals 6, so
// D = 6, S = 1 and k = 2: value(q lots, p ticks) = q * p * 100 micro-dollars.
MarketSpec btc() {
  MarketSpec s;
  s.symbol = "BTC";
  s.qty_decimals = 3;
  s.price_decimals = 1;
  s.maintenance_rate = 5'000'000;
  s.initial_rate = 10'000'000;
  return s;
}

}  // namespace

TEST(Engine, LongAtALossHandComputed) {
  Engine e(6, 1);
  const MarketId m = e.add_market(btc());
  dep(e, 1, 30'000'000);     // $30
  dep(e, 2, 1'000'000'000);  // $1000
  mark(e, m, 1000);
  e.trade(1, 2, m, 2000, 1000);  // 2 BTC at 100.0: value 2000*1000*100 = $200
  mark(e, m, 900);
  e.check_invariants();
  const AccountMargin a = e.account_margin(1);
  EXPECT_EQ(a.equity, 10'000'000);      // 30 + (180 - 200)
  EXPECT_EQ(a.maintenance, 9'000'000);  // 5% of 180
  EXPECT_EQ(a.initial, 18'000'000);
  EXPECT_FALSE(a.liquidatable);
  const PositionReport p = e.positions();
  ASSERT_EQ(p.size.size(), 2u);
  EXPECT_EQ(p.account_id[0], 1);
  EXPECT_EQ(p.unrealized_pnl[0], -20'000'000);
  // liquidation: (30e6 - 200e6 + 2000*x*100) * 1e8 = 2000*x*100*5e6 -> x = 894.73..., ceil for a long
  EXPECT_EQ(p.liquidation_price[0], 895);
  // bankruptcy: 100 - 30/2 = 85.0
  EXPECT_EQ(p.bankruptcy_price[0], 850);
  const MarginReport r = e.check_margin();
  ASSERT_EQ(r.equity.size(), 2u);
  EXPECT_EQ(r.equity[1], 1'020'000'000);
  EXPECT_EQ(r.maintenance[1], 9'000'000);
}

TEST(Engine, ReduceAndFlipRealizePnl) {
  Engine e(6, 1);
  const MarketId m = e.add_market(btc());
  dep(e, 1, 1'000'000'000);
  dep(e, 2, 1'000'000'000);
  e.trade(1, 2, m, 10, 1000);  // long 0.01 BTC at 100: E = 10*1000*100 = 1,000,000
  e.trade(2, 1, m, 4, 1200);   // sell 0.004 at 120: v = 480,000; E1 = 1e6*6/10 = 600,000
  // balance += (600,000 - 1,000,000) - (-480,000) = +80,000 realized
  EXPECT_EQ(e.balance(1), 1'000'080'000);
  e.trade(2, 1, m, 10, 1100);  // sell 0.01 at 110 from long 0.006: flip to short 0.004
  // v = 1,100,000; E1 = trunc(-1,100,000 * -4 / -10) = -440,000; balance += (-440,000 - 600,000) + 1,100,000 = +60,000
  EXPECT_EQ(e.balance(1), 1'000'140'000);
  e.check_invariants();
}

TEST(Engine, BadInputChangesNothing) {
  Engine e(6, 1);
  const MarketId m = e.add_market(btc());
  dep(e, 1, 100);
  const i64 ids[2] = {1, 2}, amounts[2] = {5, -1};
  EXPECT_THROW(e.deposit(ids, amounts), InvalidInput);
  EXPECT_FALSE(e.has_account(2));
  EXPECT_EQ(e.balance(1), 100);
  EXPECT_THROW(e.trade(1, 99, m, 1, 1), UnknownId);
  EXPECT_THROW(e.trade(1, 1, m, 1, 1), InvalidInput);
  EXPECT_THROW(e.add_market(btc()), ConfigError);
  const MarketId bad[1] = {7};
  const i64 p[1] = {5};
  EXPECT_THROW(e.set_marks(bad, p), UnknownId);
  e.check_invariants();
}

TEST(Engine, UnbalancedLoadNeedsCounterparty) {
  Engine e(6, 1);
  const MarketId m = e.add_market(btc());
  dep(e, 1, 0);
  dep(e, 9, 0);
  const i64 acc[1] = {1}, size[1] = {5}, price[1] = {1000};
  const MarketId mk[1] = {m};
  EXPECT_THROW(e.load_positions(acc, mk, size, price), InvalidInput);
  EXPECT_EQ(e.position_count(), 0u);
  e.load_positions(acc, mk, size, price, i64{9});
  EXPECT_EQ(e.position_count(), 2u);
  EXPECT_EQ(e.net_size(m), 0);
  e.check_invariants();
}

TEST(Engine, AdlFillHandComputed) {
  Engine e(6, 1);
  const MarketId m = e.add_market(btc());
  dep(e, 1, 30'000'000);     // $30
  dep(e, 2, 1'000'000'000);  // $1000
  mark(e, m, 1000);
  e.trade(1, 2, m, 2000, 1000);  // 1 long 2 BTC at 100.0 (entry $200), 2 short
  mark(e, m, 800);               // 1: equity 30 + (160 - 200) = -$10, bankrupt at 85.0
  ASSERT_TRUE(e.account_margin(1).bankrupt);
  // 500 lots at 85.0: value 500 * 850 * 100 = $42.5. The long keeps 3/4 of its entry ($150)
  // and realizes 42.5 - 50 = -7.5; the short realizes +7.5.
  e.adl_fill(1, 2, m, 500, 850);
  EXPECT_EQ(e.balance(1), 22'500'000);
  EXPECT_EQ(e.balance(2), 1'007'500'000);
  const AccountMargin a = e.account_margin(1);
  EXPECT_EQ(a.equity, -7'500'000);  // 22.5 + (1500 * 800 * 100 = 120) - 150: the deficit shrinks by 1/4
  const PositionReport p = e.positions();
  ASSERT_EQ(p.size.size(), 2u);
  EXPECT_EQ(p.size[0], 1500);
  EXPECT_EQ(p.entry_notional[0], 150'000'000);
  EXPECT_EQ(p.size[1], -1500);
  EXPECT_EQ(p.entry_notional[1], -150'000'000);
  e.check_invariants();
  // closing the rest flattens both
  e.adl_fill(1, 2, m, 1500, 850);
  EXPECT_EQ(e.position_count(), 0u);
  e.check_invariants();
}

TEST(Engine, AdlFillRoundsAgainstTheBankruptSide) {
  // money_decimals 0 with lots of 0.001 and ticks of 0.1: one lot at one tick is 1e-4 money
  // units, so a fill of 1 lot at 3 ticks is worth 0.0003.
  Engine e(0, 1);
  const MarketId m = e.add_market(btc());
  dep(e, 1, 100);
  dep(e, 2, 100);
  dep(e, 3, 100);
  dep(e, 4, 100);
  mark(e, m, 3);
  e.trade(2, 1, m, 5, 3);     // 1 short 5 lots, 2 long: entry floor(0.0015) = 0
  e.trade(3, 4, m, 5, 3);     // 3 long 5 lots, 4 short
  e.adl_fill(1, 2, m, 1, 3);  // bankrupt short buys: charged ceil(0.0003) = 1
  EXPECT_EQ(e.balance(1), 99);
  EXPECT_EQ(e.balance(2), 101);
  e.adl_fill(3, 4, m, 1, 3);  // bankrupt long sells: credited floor(0.0003) = 0
  EXPECT_EQ(e.balance(3), 100);
  EXPECT_EQ(e.balance(4), 100);
  e.check_invariants();
}

TEST(Engine, AdlFillBadInputChangesNothing) {
  Engine e(6, 1);
  const MarketId m = e.add_market(btc());
  MarketSpec eth = btc();
  eth.symbol = "ETH";
  const MarketId m2 = e.add_market(eth);
  for (i64 id : {1, 2, 3}) dep(e, id, 1'000'000'000);
  mark(e, m, 1000);
  mark(e, m2, 1000);
  e.trade(1, 2, m, 100, 1000);  // 1 long 100, 2 short 100
  e.trade(3, 2, m, 50, 1000);   // 3 long 50, 2 short 150
  const PositionReport before = e.positions();
  const i64 b1 = e.balance(1), b2 = e.balance(2), b3 = e.balance(3);
  EXPECT_THROW(e.adl_fill(1, 99, m, 1, 1000), UnknownId);      // unknown winner
  EXPECT_THROW(e.adl_fill(99, 2, m, 1, 1000), UnknownId);      // unknown bankrupt
  EXPECT_THROW(e.adl_fill(1, 2, 7, 1, 1000), UnknownId);       // unknown market
  EXPECT_THROW(e.adl_fill(1, 1, m, 1, 1000), InvalidInput);    // same account
  EXPECT_THROW(e.adl_fill(1, 3, m, 1, 1000), InvalidInput);    // same side
  EXPECT_THROW(e.adl_fill(1, 2, m2, 1, 1000), InvalidInput);   // no position there
  EXPECT_THROW(e.adl_fill(1, 2, m, 0, 1000), InvalidInput);    // zero lots
  EXPECT_THROW(e.adl_fill(1, 2, m, 1, 0), InvalidInput);       // zero price
  EXPECT_THROW(e.adl_fill(1, 2, m, 101, 1000), InvalidInput);  // more than the bankrupt holds
  EXPECT_THROW(e.adl_fill(2, 3, m, 51, 1000), InvalidInput);   // more than the winner holds
  EXPECT_THROW(e.adl_fill(1, 2, m, 100, INT64_MAX / 2), ArithmeticOverflow);
  const PositionReport after = e.positions();
  EXPECT_EQ(after.size, before.size);
  EXPECT_EQ(after.entry_notional, before.entry_notional);
  EXPECT_EQ(e.balance(1), b1);
  EXPECT_EQ(e.balance(2), b2);
  EXPECT_EQ(e.balance(3), b3);
  e.check_invariants();
}

// Marks finer than the order tick: BTC with mark_decimals 5, so a price unit is 10^-5 and a
// tick (0.1) is 10^4 units. D = 3 + 5 = 8, S = 100, k = 0: value(q, p) = q * p in 10^-8, / 100.
TEST(Engine, MarksFinerThanTheTickHandComputed) {
  Engine e(6, 1);
  MarketSpec s = btc();
  s.mark_decimals = 5;
  const MarketId m = e.add_market(s);
  EXPECT_EQ(e.market_spec(m).mark_decimals, 5);
  dep(e, 1, 50'000'000);
  dep(e, 2, 1'000'000'000);
  e.trade(1, 2, m, 2000, 10'000'000);  // 2 BTC at 100.0 = 10^7 units: E = 2000 * 10^7 / 100 = $200
  const StateHash before = e.state_hash();
  // 100.05 is not a whole tick: refused, nothing changes
  EXPECT_THROW(e.trade(1, 2, m, 1000, 10'005'000), InvalidInput);
  const std::vector<i64> acc{1, 2};
  const std::vector<MarketId> mk{m, m};
  const std::vector<i64> sizes{5, -5};
  const std::vector<i64> entries{9'000'000, 9'000'001};
  EXPECT_THROW(e.load_positions(acc, mk, sizes, entries, std::nullopt), InvalidInput);
  EXPECT_TRUE(e.state_hash() == before);
  // a mark of 90.12345: equity 50 + 2 * (90.12345 - 100) = 30.2469; maintenance 9.012345
  mark(e, m, 9'012'345);
  const AccountMargin a = e.account_margin(1);
  EXPECT_EQ(a.equity, 30'246'900);
  EXPECT_EQ(a.maintenance, 9'012'345);
  // liquidation: 2x - 150 = 0.1x -> x = 78.947368..., up for a long, in 10^-5
  EXPECT_EQ(e.positions().liquidation_price[0], 7'894'737);
  e.check_invariants();
  // a spec whose mark unit is coarser than its tick, or past 18 decimals, is refused
  MarketSpec bad = btc();
  bad.symbol = "BAD";
  bad.mark_decimals = 0;
  EXPECT_THROW(e.add_market(bad), ConfigError);
  bad.mark_decimals = 19;
  EXPECT_THROW(e.add_market(bad), ConfigError);
  EXPECT_EQ(e.market_count(), 1u);
}
