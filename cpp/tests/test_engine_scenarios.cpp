// More engine cases: tier tables, bankruptcy split, the incremental check against the full
// one, atomicity of refused operations, the value range, and the position storage under
// many trades and loads. Expected numbers are derived by hand in the comments from
// docs/semantics.md; randomized tests compare the engine with itself (incremental vs full)
// or with the few-line size / entry / balance bookkeeping written out in this file.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "deleverage/engine.hpp"
#include "test_helpers.hpp"

using namespace deleverage;
using deleverage::testing::dep;
using deleverage::testing::mark;

namespace {

constexpr i64 kR = kRateScale;  // 1e8

MarketSpec flat_market(const std::string& symbol, int qty_decimals, int price_decimals, i64 mmr, i64 imr) {
  MarketSpec s;
  s.symbol = symbol;
  s.qty_decimals = qty_decimals;
  s.price_decimals = price_decimals;
  s.maintenance_rate = mmr;
  s.initial_rate = imr;
  return s;
}

// Everything observable about the state, for "a refused call changed nothing" checks.
struct Snapshot {
  std::vector<i64> account_ids;
  std::vector<i64> balances;
  std::vector<std::tuple<i64, i64, i64, i64, bool, bool>> margins;  // equity, mm, im, liq, bankrupt
  std::vector<i64> marks;
  std::vector<i64> pos_account, pos_size, pos_entry, pos_upnl, pos_liq, pos_bk;
  std::vector<MarketId> pos_market;
  std::size_t position_count = 0;
  i128 deposits = 0, withdrawals = 0, loaded = 0;
  bool with_positions = true;

  bool operator==(const Snapshot&) const = default;
};

Snapshot snapshot(const Engine& e, bool with_positions = true) {
  Snapshot s;
  s.account_ids = e.account_ids();
  for (i64 id : s.account_ids) {
    s.balances.push_back(e.balance(id));
    if (with_positions) {
      const AccountMargin m = e.account_margin(id);
      s.margins.emplace_back(m.equity, m.maintenance, m.initial, m.liquidatable, m.bankrupt, false);
    }
  }
  for (std::size_t m = 0; m < e.market_count(); ++m) s.marks.push_back(e.mark(static_cast<MarketId>(m)));
  if (with_positions) {
    const PositionReport p = e.positions();
    s.pos_account = p.account_id;
    s.pos_market = p.market;
    s.pos_size = p.size;
    s.pos_entry = p.entry_notional;
    s.pos_upnl = p.unrealized_pnl;
    s.pos_liq = p.liquidation_price;
    s.pos_bk = p.bankruptcy_price;
  }
  s.position_count = e.position_count();
  s.deposits = e.flows().deposits;
  s.withdrawals = e.flows().withdrawals;
  s.loaded = e.flows().loaded_entry_notional;
  s.with_positions = with_positions;
  return s;
}

// Expects `fn` to throw E with a message containing `needle`.
template <class E, class Fn>
void expect_throw_with(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception mentioning '" << needle << "'";
  } catch (const E& ex) {
    EXPECT_NE(std::string(ex.what()).find(needle), std::string::npos) << "message: " << ex.what();
  }
}

// money_decimals 0, qty 0, price 0: D = 0, S = 1, k = 0, so value = q * p money units.
// Tiers (caps in money units, rates in 1e-8):
//   tier 0: notional <= 10,000     mmr 1.0%  (1,000,000)  imr 2%  (2,000,000)
//   tier 1: notional <= 100,000    mmr 2.5%  (2,500,000)  imr 5%  (5,000,000)
//   tier 2: above                  mmr 5.0%  (5,000,000)  imr 10% (10,000,000)
// Deductions (money x 1e8):
//   A1 = 10,000 * (2.5e6 - 1e6) = 1.5e10        B1 = 10,000 * (5e6 - 2e6) = 3e10
//   A2 = 1.5e10 + 100,000 * (5e6 - 2.5e6) = 2.65e11
//   B2 = 3e10 + 100,000 * (1e7 - 5e6) = 5.3e11
MarketSpec tiered_market() {
  MarketSpec s = flat_market("TIER", 0, 0, 0, 0);
  s.tiers = {TierSpec{10'000, 1'000'000, 2'000'000, -1}, TierSpec{100'000, 2'500'000, 5'000'000, -1},
             TierSpec{0, 5'000'000, 10'000'000, -1}};
  return s;
}

}  // namespace

// ------------------------------------------------------------------------------- tiers

TEST(Tiers, DeductionsMakeTheRequirementContinuous) {
  Engine e(0, 1);
  const MarketId m = e.add_market(tiered_market());
  const std::vector<Tier>& t = e.market_tiers(m);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_TRUE(t[0].maintenance_deduction == 0);
  EXPECT_TRUE(t[1].maintenance_deduction == i128{15'000'000'000});   // A1 = 1.5e10
  EXPECT_TRUE(t[2].maintenance_deduction == i128{265'000'000'000});  // A2 = 2.65e11
  EXPECT_TRUE(t[1].initial_deduction == i128{30'000'000'000});       // B1 = 3e10
  EXPECT_TRUE(t[2].initial_deduction == i128{530'000'000'000});      // B2 = 5.3e11
  EXPECT_EQ(t[2].max_notional, std::numeric_limits<i64>::max());     // the last cap is unbounded
}

TEST(Tiers, MaintenanceIsContinuousAcrossBandEdges) {
  Engine e(0, 1);
  const MarketId m = e.add_market(tiered_market());
  dep(e, 1, 1'000'000);
  dep(e, 2, 1'000'000);
  e.trade(1, 2, m, 1, 10'000);  // 1 long, 2 short, 1 lot at 10,000: E = +-10,000

  struct Row {
    i64 price, maintenance, initial;
  };
  const Row rows[] = {
      // notional 10,000 is in tier 0 (cap inclusive): mm = 10,000 * 1e6 / 1e8 = 100; im = 10,000 * 2e6 / 1e8 = 200
      {10'000, 100, 200},
      // 10,001 is in tier 1: mm_VR = 10,001 * 2.5e6 - 1.5e10 = 10,002,500,000 -> ceil(/1e8) = ceil(100.025) = 101
      //                       im_VR = 10,001 * 5e6 - 3e10 = 20,005,000,000 -> ceil(200.05) = 201
      {10'001, 101, 201},
      // 9,999 in tier 0: mm = 9,999 * 1e6 = 9,999,000,000 -> ceil(99.99) = 100; im = 19,998,000,000 -> ceil(199.98) =
      // 200
      {9'999, 100, 200},
      // 100,000 in tier 1: mm = 2.5e11 - 1.5e10 = 2.35e11 -> 2,350; im = 5e11 - 3e10 = 4.7e11 -> 4,700
      {100'000, 2'350, 4'700},
      // 100,001 in tier 2: mm = 100,001 * 5e6 - 2.65e11 = 235,005,000,000 -> ceil(2,350.05) = 2,351
      //                    im = 100,001 * 1e7 - 5.3e11 = 470,010,000,000 -> ceil(4,700.1) = 4,701
      {100'001, 2'351, 4'701},
      // 200,000 in tier 2: mm = 1e12 - 2.65e11 = 7.35e11 -> 7,350; im = 2e12 - 5.3e11 = 1.47e12 -> 14,700
      {200'000, 7'350, 14'700},
  };
  const MarketId moved[1] = {m};
  for (const Row& row : rows) {
    SCOPED_TRACE("price " + std::to_string(row.price));
    mark(e, m, row.price);
    // long and short have the same notional, hence the same requirement
    for (i64 id : {i64{1}, i64{2}}) {
      const AccountMargin a = e.account_margin(id);
      EXPECT_EQ(a.maintenance, row.maintenance);
      EXPECT_EQ(a.initial, row.initial);
    }
    // equity: 1,000,000 +- (price - 10,000)
    EXPECT_EQ(e.account_margin(1).equity, 1'000'000 + (row.price - 10'000));
    EXPECT_EQ(e.account_margin(2).equity, 1'000'000 - (row.price - 10'000));
    const MarginReport inc = e.check_margin(moved);
    ASSERT_EQ(inc.maintenance.size(), 2u);
    EXPECT_EQ(inc.maintenance[0], row.maintenance);
    EXPECT_EQ(inc.initial[1], row.initial);
    e.check_invariants();
    const MarginReport full = e.check_margin();
    EXPECT_EQ(full.maintenance[0], row.maintenance);
    EXPECT_EQ(full.initial[1], row.initial);
  }
}

TEST(Tiers, WithAValueScaleTheCapsAreInMoney) {
  // money_decimals 2, qty_decimals 3, price_decimals 1: D = 4, S = 100, k = 0.
  // value_V = q * p (1e-4 units); caps in money (1e-2) are compared as cap * S.
  // Tier 0: notional <= 50.00 (5,000 money units), mmr 2%; tier 1: mmr 4%.
  // A1 = 5,000 * (4e6 - 2e6) = 1e10.
  Engine e(2, 1);
  MarketSpec s = flat_market("X", 3, 1, 0, 0);
  s.tiers = {TierSpec{5'000, 2'000'000, 2'000'000, -1}, TierSpec{0, 4'000'000, 4'000'000, 100}};  // 100 = 1e10 / 1e8
  const MarketId m = e.add_market(s);
  dep(e, 1, 100'000);
  dep(e, 2, 100'000);
  e.trade(1, 2, m, 1'000, 500);  // 1.000 base at 50.0: value_V = 1,000 * 500 = 500,000 = 50.00 money
  mark(e, m, 500);
  // notional_V = 500,000 <= 5,000 * 100: tier 0. mm_VR = 500,000 * 2e6 = 1e12; / (S * R = 1e10) = 100 (1.00)
  EXPECT_EQ(e.account_margin(1).maintenance, 100);
  mark(e, m, 501);
  // notional_V = 501,000 > 500,000: tier 1. mm_VR = 501,000 * 4e6 - 1e10 * 100 = 2.004e12 - 1e12 = 1.004e12
  // -> ceil(1.004e12 / 1e10) = ceil(100.4) = 101
  EXPECT_EQ(e.account_margin(1).maintenance, 101);
  // equity = 100,000 + floor((501,000 - 500,000) / 100) = 100,010
  EXPECT_EQ(e.account_margin(1).equity, 100'010);
  EXPECT_EQ(e.account_margin(2).equity, 99'990);
  e.check_invariants();
}

TEST(Tiers, BadTablesAreRefused) {
  Engine e(0, 1);
  MarketSpec wrong_amount = tiered_market();
  wrong_amount.tiers[1].maintenance_amount = 151;  // continuity needs 150 (1.5e10 / 1e8)
  expect_throw_with<ConfigError>([&] { e.add_market(wrong_amount); }, "tiers[1].maintenance_amount");
  MarketSpec right_amount = tiered_market();
  right_amount.tiers[1].maintenance_amount = 150;
  right_amount.tiers[2].maintenance_amount = 2'650;  // 2.65e11 / 1e8
  EXPECT_EQ(e.add_market(right_amount), 0);

  MarketSpec decreasing = tiered_market();
  decreasing.symbol = "DEC";
  decreasing.tiers[2].maintenance_rate = 2'000'000;  // below tier 1's 2.5%
  expect_throw_with<ConfigError>([&] { e.add_market(decreasing); }, "tiers[2].");
  MarketSpec im_below_mm = tiered_market();
  im_below_mm.symbol = "IMM";
  im_below_mm.tiers[0].initial_rate = 500'000;
  expect_throw_with<ConfigError>([&] { e.add_market(im_below_mm); }, "tiers[0].initial_margin");
  MarketSpec caps_not_increasing = tiered_market();
  caps_not_increasing.symbol = "CAP";
  caps_not_increasing.tiers[1].max_notional = 10'000;
  expect_throw_with<ConfigError>([&] { e.add_market(caps_not_increasing); }, "tiers[1].max_notional");
  EXPECT_EQ(e.market_count(), 1u);
}

// ------------------------------------------------------------------------------ bankruptcy

TEST(Bankruptcy, EquityIsSplitByMaintenanceShare) {
  // money_decimals 0. A: qty 0, price 1 (k = 0), mmr 10%, imr 20%. B: qty 0, price 0 (k = 1),
  // mmr 5%, imr 10%. D = 1, S = 10.
  Engine e(0, 1);
  const MarketId a = e.add_market(flat_market("A", 0, 1, 10'000'000, 20'000'000));
  const MarketId b = e.add_market(flat_market("B", 0, 0, 5'000'000, 10'000'000));
  dep(e, 1, 350);
  dep(e, 2, 1'000'000);
  e.trade(1, 2, a, 10, 1'000);  // 1 long 10 A at 100.0: value_V = 10 * 1000 = 10,000 -> E = 1,000
  e.trade(2, 1, b, 20, 50);     // 1 short 20 B at 50: value_V = -20 * 50 * 10 = -10,000 -> E = -1,000
  const MarketId both[2] = {a, b};
  const i64 prices[2] = {1'000, 50};
  e.set_marks(both, prices);
  // account 1: U = 0, equity = 350. mm_A = ceil(10,000 * 1e7 / 1e9) = 100, mm_B = ceil(10,000 * 5e6 / 1e9) = 50
  const AccountMargin m1 = e.account_margin(1);
  EXPECT_EQ(m1.equity, 350);
  EXPECT_EQ(m1.maintenance, 150);
  EXPECT_EQ(m1.initial, 300);  // 10,000 * 2e7 / 1e9 + 10,000 * 1e7 / 1e9 = 200 + 100
  const PositionReport p = e.positions();
  ASSERT_EQ(p.account_id.size(), 4u);
  // rows: account 1 (A, B), account 2 (A, B)
  EXPECT_EQ(p.account_id[0], 1);
  EXPECT_EQ(p.market[0], a);
  EXPECT_EQ(p.market[1], b);
  // shares: A floor(350 * 100 / 150) = floor(233.3) = 233; B floor(350 * 50 / 150) = floor(116.7) = 116
  // A (long, q = 10, k = 0): x = (10 * 1000 - 233 * 10) / 10 = 7,670 / 10 = 767 exactly
  EXPECT_EQ(p.bankruptcy_price[0], 767);
  // B (short, q = -20, k = 1): x = (-20 * 50 * 10 - 116 * 10) / (-20 * 10) = -11,160 / -200 = 55.8 -> ceil 56
  EXPECT_EQ(p.bankruptcy_price[1], 56);
  // Liquidation, A: Eo = 350 * 10 + 0 = 3,500, Mo = mm_VR(B) = 5e10, E*S = 10,000
  //   x = (5e10 - (3,500 - 10,000) * 1e8) / (1 * (10 * 1e8 - 10 * 1e7)) = 7e11 / 9e8 = 777.8 -> ceil 778
  EXPECT_EQ(p.liquidation_price[0], 778);
  // B: Eo = 3,500, Mo = mm_VR(A) = 1e11, E*S = -10,000
  //   x = (1e11 - (3,500 + 10,000) * 1e8) / (10 * (-20 * 1e8 - 20 * 5e6)) = -1.25e12 / -2.1e10 = 59.5 -> floor 59
  EXPECT_EQ(p.liquidation_price[1], 59);
  // account 2: equity 1,000,000, mm 100 (A, short) and 50 (B, long)
  //   A share floor(1e6 * 100 / 150) = 666,666: x = (-10 * 1000 - 6,666,660) / (-10) = 667,666 exactly
  //   B share floor(1e6 * 50 / 150) = 333,333: x = (20 * 50 * 10 - 3,333,330) / (20 * 10) = -16,616.65 -> none (0)
  EXPECT_EQ(p.account_id[2], 2);
  EXPECT_EQ(p.bankruptcy_price[2], 667'666);
  EXPECT_EQ(p.bankruptcy_price[3], 0);
}

TEST(Bankruptcy, WithoutMaintenanceTheSplitIsByNotional) {
  // money_decimals 0, qty 0, price 0, all rates 0: mm_i = 0, so weights are floor(notional / S).
  Engine e(0, 1);
  const MarketId c = e.add_market(flat_market("C", 0, 0, 0, 0));
  const MarketId d = e.add_market(flat_market("D", 0, 0, 0, 0));
  dep(e, 3, 40);
  dep(e, 4, 1'000'000);
  e.trade(3, 4, c, 3, 100);  // notional 300
  e.trade(3, 4, d, 1, 100);  // notional 100
  const MarketId both[2] = {c, d};
  const i64 prices[2] = {100, 100};
  e.set_marks(both, prices);
  const PositionReport p = e.positions();
  ASSERT_EQ(p.account_id.size(), 4u);
  // account 3: equity 40, shares floor(40 * 300 / 400) = 30 and floor(40 * 100 / 400) = 10
  //   C: (3 * 100 - 30) / 3 = 90; D: (100 - 10) / 1 = 90
  EXPECT_EQ(p.bankruptcy_price[0], 90);
  EXPECT_EQ(p.bankruptcy_price[1], 90);
  // account 4 (short): shares 750,000 and 250,000
  //   C: (-300 - 750,000) / -3 = 250,100; D: (-100 - 250,000) / -1 = 250,100
  EXPECT_EQ(p.bankruptcy_price[2], 250'100);
  EXPECT_EQ(p.bankruptcy_price[3], 250'100);
  // with zero maintenance the liquidation price is where equity reaches 0. C: Eo = 40, Mo = 0,
  // E*S = 300: x = (0 - (40 - 300) * 1e8) / (1 * (3 * 1e8 - 0)) = 2.6e10 / 3e8 = 86.67 -> ceil 87
  EXPECT_EQ(p.liquidation_price[0], 87);
}

// ------------------------------------------------------------- incremental == full check

namespace {
struct RandomBook {
  std::vector<MarketId> markets;
  std::vector<i64> accounts;
};

// Builds the same random book in every engine passed in.
RandomBook build_random_book(std::vector<Engine*> engines, std::mt19937_64& rng) {
  RandomBook book;
  for (Engine* e : engines) {
    e->add_market(flat_market("BTC", 3, 1, 5'000'000, 10'000'000));
    e->add_market(flat_market("ETH", 2, 2, 2'000'000, 4'000'000));
    MarketSpec t = flat_market("SOL", 0, 3, 0, 0);
    t.tiers = {TierSpec{1'000'000, 1'000'000, 2'000'000, -1}, TierSpec{50'000'000, 3'000'000, 6'000'000, -1},
               TierSpec{0, 10'000'000, 20'000'000, -1}};
    e->add_market(t);
    e->add_market(flat_market("DOGE", 0, 5, 10'000'000, 15'000'000));
    e->add_market(flat_market("IDLE", 1, 1, 1'000'000, 1'000'000));  // never traded
  }
  book.markets = {0, 1, 2, 3, 4};
  const i64 base_price[4] = {300'000, 200'000, 50'000, 10'000};
  for (int i = 0; i < 40; ++i) book.accounts.push_back(1000 + 7 * i);
  for (Engine* e : engines)
    for (i64 id : book.accounts) dep(*e, id, 1'000'000'000);
  std::vector<MarketId> ms;
  std::vector<i64> initial_prices;
  for (MarketId m = 0; m < 5; ++m) {
    ms.push_back(m);
    initial_prices.push_back(m < 4 ? base_price[m] : 77);
  }
  for (Engine* e : engines) e->set_marks(ms, initial_prices);
  std::uniform_int_distribution<std::size_t> pick(0, book.accounts.size() - 1);
  for (int t = 0; t < 400; ++t) {
    const std::size_t b = pick(rng);
    std::size_t s = pick(rng);
    if (s == b) s = (s + 1) % book.accounts.size();
    const MarketId m = static_cast<MarketId>(rng() % 4);
    const i64 size = 1 + static_cast<i64>(rng() % 5'000);
    const i64 price = base_price[m] / 2 + static_cast<i64>(rng() % static_cast<u64>(base_price[m]));
    for (Engine* e : engines) e->trade(book.accounts[b], book.accounts[s], m, size, price);
  }
  return book;
}
}  // namespace

TEST(IncrementalCheck, EqualsFullCheckAfterRandomMarkMoves) {
  std::mt19937_64 rng(20240607);
  Engine inc(6, 1), full(6, 2);
  const RandomBook book = build_random_book({&inc, &full}, rng);
  inc.check_margin();  // both start from valued marks
  full.check_margin();
  std::vector<i64> valued(5);
  for (MarketId m = 0; m < 5; ++m) valued[static_cast<std::size_t>(m)] = inc.mark(m);

  for (int step = 0; step < 200; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    // move a random subset of marks (sometimes to the same value); report only some of them
    std::vector<MarketId> ms, moved;
    std::vector<i64> ps;
    for (MarketId m = 0; m < 5; ++m) {
      if (rng() % 2) continue;
      const i64 old = inc.mark(m);
      const i64 delta = static_cast<i64>(rng() % 2001) - 1000;  // +-10%, in 1/10000
      i64 p = old + old * delta / 10'000;
      if (rng() % 8 == 0) p = old;
      p = std::max<i64>(p, 1);
      ms.push_back(m);
      ps.push_back(p);
      if (rng() % 3) moved.push_back(m);
    }
    for (Engine* e : {&inc, &full}) e->set_marks(ms, ps);
    if (step % 5 == 3) {  // a trade between checks updates the cached sums at the valued marks
      const i64 b = book.accounts[rng() % book.accounts.size()];
      i64 s = book.accounts[rng() % book.accounts.size()];
      if (s == b) s = b == book.accounts[0] ? book.accounts[1] : book.accounts[0];
      const MarketId m = static_cast<MarketId>(rng() % 4);
      const i64 size = 1 + static_cast<i64>(rng() % 3'000);
      for (Engine* e : {&inc, &full}) e->trade(b, s, m, size, inc.mark(m));
    }

    // expected set of reported accounts: holders of a position in a market that is listed
    // or whose mark differs from the last valued one
    std::set<MarketId> revalued(moved.begin(), moved.end());
    for (MarketId m = 0; m < 5; ++m)
      if (inc.mark(m) != valued[static_cast<std::size_t>(m)]) revalued.insert(m);
    for (MarketId m : revalued) valued[static_cast<std::size_t>(m)] = inc.mark(m);
    std::set<i64> holders;
    const PositionReport pos = full.positions();
    for (std::size_t i = 0; i < pos.account_id.size(); ++i)
      if (revalued.count(pos.market[i])) holders.insert(pos.account_id[i]);

    const MarginReport r = inc.check_margin(moved);
    const MarginReport f = full.check_margin();
    ASSERT_NO_THROW(inc.check_invariants());
    ASSERT_EQ(r.account_id.size(), holders.size());
    // the full report is in creation order: map ids to rows, and check the incremental
    // report keeps that order
    std::map<i64, std::size_t> row_of;
    for (std::size_t a = 0; a < f.account_id.size(); ++a) row_of[f.account_id[a]] = a;
    for (std::size_t i = 1; i < r.account_id.size(); ++i)
      EXPECT_LT(row_of[r.account_id[i - 1]], row_of[r.account_id[i]]);
    for (std::size_t i = 0; i < r.account_id.size(); ++i) {
      const std::size_t a = row_of[r.account_id[i]];
      ASSERT_TRUE(holders.count(r.account_id[i]));
      ASSERT_EQ(f.account_id[a], r.account_id[i]);
      EXPECT_EQ(r.equity[i], f.equity[a]);
      EXPECT_EQ(r.maintenance[i], f.maintenance[a]);
      EXPECT_EQ(r.initial[i], f.initial[a]);
      EXPECT_EQ(r.liquidatable[i], f.liquidatable[a]);
      EXPECT_EQ(r.bankrupt[i], f.bankrupt[a]);
    }
    // account_margin (a fresh valuation at the current marks) agrees with the full check
    for (std::size_t a = 0; a < f.account_id.size(); a += 5) {
      const AccountMargin am = inc.account_margin(f.account_id[a]);
      EXPECT_EQ(am.equity, f.equity[a]);
      EXPECT_EQ(am.maintenance, f.maintenance[a]);
      EXPECT_EQ(am.initial, f.initial[a]);
    }
  }
  // a final incremental check over every market reports exactly the position holders
  const MarketId all[5] = {0, 1, 2, 3, 4};
  const MarginReport r = inc.check_margin(all);
  const MarginReport f = full.check_margin();
  const PositionReport pos = full.positions();
  const std::set<i64> holders(pos.account_id.begin(), pos.account_id.end());
  ASSERT_EQ(r.account_id.size(), holders.size());
  std::map<i64, std::size_t> row_of;
  for (std::size_t a = 0; a < f.account_id.size(); ++a) row_of[f.account_id[a]] = a;
  for (std::size_t i = 0; i < r.account_id.size(); ++i) {
    EXPECT_EQ(r.equity[i], f.equity[row_of[r.account_id[i]]]);
    EXPECT_EQ(r.maintenance[i], f.maintenance[row_of[r.account_id[i]]]);
  }
}

// ------------------------------------------------------------------- refused withdrawals

TEST(Withdraw, InsufficientMarginLeavesStateUnchanged) {
  // BTC: qty 3, price 1, money 6: S = 1, k = 2. 5% / 10%.
  Engine e(6, 1);
  const MarketId m = e.add_market(flat_market("BTC", 3, 1, 5'000'000, 10'000'000));
  dep(e, 1, 30'000'000);     // $30
  dep(e, 2, 1'000'000'000);  // $1000
  dep(e, 3, 5);
  e.trade(1, 2, m, 2'000, 1'000);  // 2 BTC at 100.0: value 2000 * 1000 * 100 = 200,000,000 ($200)
  mark(e, m, 1'000);
  // account 1: equity 30,000,000, initial = 200e6 * 1e7 / 1e8 = 20,000,000: at most $10 may leave
  const Snapshot before = snapshot(e);
  {
    const i64 ids[3] = {1, 2, 1}, amounts[3] = {5'000'000, 1, 5'000'001};
    // row 2 would leave equity 19,999,999 < 20,000,000
    expect_throw_with<InsufficientMargin>([&] { e.withdraw(ids, amounts); }, "amounts[2]");
  }
  EXPECT_EQ(snapshot(e), before);
  e.check_invariants();
  {
    const i64 ids[1] = {3}, amounts[1] = {6};  // a flat account may not go below 0
    expect_throw_with<InsufficientMargin>([&] { e.withdraw(ids, amounts); }, "amounts[0]");
  }
  {
    const i64 ids[2] = {2, 77}, amounts[2] = {1, 1};  // unknown account: checked before anything
    expect_throw_with<UnknownId>([&] { e.withdraw(ids, amounts); }, "accounts[1]");
  }
  {
    const i64 ids[2] = {2, 2}, amounts[2] = {1, -1};
    expect_throw_with<InvalidInput>([&] { e.withdraw(ids, amounts); }, "amounts[1]");
  }
  EXPECT_EQ(snapshot(e), before);
  // exactly down to the initial margin is allowed: equity 20,000,000 == initial
  {
    const i64 ids[2] = {1, 3}, amounts[2] = {10'000'000, 5};
    e.withdraw(ids, amounts);
  }
  EXPECT_EQ(e.balance(1), 20'000'000);
  EXPECT_EQ(e.balance(3), 0);
  EXPECT_TRUE(e.flows().withdrawals == 10'000'005);
  e.check_invariants();
}

// ------------------------------------------------------------------- atomic trade batches

TEST(Trades, BatchWhoseLastTradeOverflowsChangesNothing) {
  // money 0, qty 0, price 0: S = 1, k = 0, value = q * p; the limit is |q * p| <= 2^62.
  Engine e(0, 1);
  const MarketId m = e.add_market(flat_market("X", 0, 0, 1'000'000, 2'000'000));
  const MarketId other = e.add_market(flat_market("Y", 0, 0, 1'000'000, 2'000'000));
  for (i64 id : {1, 2, 3}) dep(e, id, 1'000'000);
  e.trade(1, 2, m, 100, 2);      // 1 long 100 @ 2
  e.trade(3, 1, other, 40, 10);  // 3 long 40 Y @ 10
  const MarketId ms[2] = {m, other};
  const i64 ps[2] = {1, 9};
  e.set_marks(ms, ps);
  e.check_margin();
  const Snapshot before = snapshot(e);
  const MarginReport margin_before = e.check_margin();

  const i64 half = i64{1} << 61;
  // row 0: 1 buys 2^61 from 2 at 1 (1 -> 2^61 + 100 lots, value at mark 1 fine)
  // row 1: 2 buys 50 from 3 at 3 (2 reduces its short, realizing PnL; 3 opens a short)
  // row 2: 1 buys 10 Y from 3 at 12 (1 reduces its short, 3 reduces its long to 30)
  // row 3: 2 buys the remaining 30 Y from 3 at 8 (3's Y position is removed inside the batch)
  // row 4: 1 buys 2^61 more from 3 at 1: passes validation (2^61 * 1 <= 2^62) but 1's
  //        position would be 2^62 + 100 lots, worth 2^62 + 100 > 2^62 at mark 1 -> overflow
  const i64 buyers[5] = {1, 2, 1, 2, 1}, sellers[5] = {2, 3, 3, 3, 3}, sizes[5] = {half, 50, 10, 30, half},
            prices[5] = {1, 3, 12, 8, 1};
  const MarketId markets[5] = {m, m, other, other, m};
  expect_throw_with<ArithmeticOverflow>([&] { e.trades(buyers, sellers, markets, sizes, prices); }, "account 1");
  EXPECT_EQ(snapshot(e), before);
  ASSERT_NO_THROW(e.check_invariants());  // cached sums restored too
  const MarginReport margin_after = e.check_margin();
  EXPECT_EQ(margin_after.equity, margin_before.equity);
  EXPECT_EQ(margin_after.maintenance, margin_before.maintenance);
  EXPECT_EQ(margin_after.initial, margin_before.initial);

  // the same batch without its last row applies; 3 no longer holds Y (removed)
  e.trades(std::span(buyers, 4), std::span(sellers, 4), std::span(markets, 4), std::span(sizes, 4),
           std::span(prices, 4));
  e.check_invariants();
  const PositionReport p = e.positions();
  // 1: X 100 + 2^61, Y -40 + 10 = -30; 2: X -(100 + 2^61) + 50, Y +30; 3: X -50 (Y removed)
  ASSERT_EQ(p.account_id.size(), 5u);
  EXPECT_EQ(p.size[0], half + 100);
  EXPECT_EQ(p.size[1], -30);
  EXPECT_EQ(p.size[2], -half - 50);
  EXPECT_EQ(p.size[3], 30);
  EXPECT_EQ(p.account_id[4], 3);
  EXPECT_EQ(p.market[4], m);
  EXPECT_EQ(p.size[4], -50);
}

TEST(Trades, BatchWithABadLastRowIsRefusedBeforeAnythingApplies) {
  Engine e(0, 1);
  const MarketId m = e.add_market(flat_market("X", 0, 0, 1'000'000, 2'000'000));
  dep(e, 1, 100);
  dep(e, 2, 100);
  const Snapshot before = snapshot(e, false);
  const i64 b[3] = {1, 2, 1}, s[3] = {2, 1, 2}, q[3] = {5, 3, 0}, p[3] = {10, 11, 12};
  const MarketId ms[3] = {m, m, m};
  expect_throw_with<InvalidInput>([&] { e.trades(b, s, ms, q, p); }, "sizes[2]");
  EXPECT_EQ(snapshot(e, false), before);
  EXPECT_EQ(e.position_count(), 0u);
  const i64 q2[3] = {5, 3, 1}, p2[3] = {10, 11, 0};
  expect_throw_with<InvalidInput>([&] { e.trades(b, s, ms, q2, p2); }, "prices[2]");
  const MarketId bad_m[3] = {m, m, 3};
  expect_throw_with<UnknownId>([&] { e.trades(b, s, bad_m, q2, p); }, "markets[2]");
  const i64 q_short[2] = {1, 1};
  expect_throw_with<InvalidInput>([&] { e.trades(b, s, ms, q_short, p); }, "sizes");
  EXPECT_EQ(snapshot(e, false), before);
  e.check_invariants();
}

// ----------------------------------------------------------------------- value range

TEST(ValueRange, HugeMarkPriceOverflows) {
  // money 0, qty 0, price 0: a position of 1,000 lots may be marked at most at
  // floor(2^62 / 1000) = floor(4,611,686,018,427,387,904 / 1000) = 4,611,686,018,427,387.
  Engine e(0, 1);
  const MarketId m = e.add_market(flat_market("X", 0, 0, 1'000'000, 2'000'000));
  const MarketId n = e.add_market(flat_market("Y", 0, 0, 1'000'000, 2'000'000));
  dep(e, 1, 0);
  dep(e, 2, 0);
  e.trade(1, 2, m, 1'000, 5);
  mark(e, m, 5);
  const i64 limit_price = 4'611'686'018'427'387;
  expect_throw_with<ArithmeticOverflow>([&] { mark(e, m, limit_price + 1); }, "prices[0]");
  EXPECT_EQ(e.mark(m), 5);
  // two markets in one call: the valid first one is not applied either
  const MarketId ms[2] = {n, m};
  const i64 ps[2] = {7, std::numeric_limits<i64>::max()};
  expect_throw_with<ArithmeticOverflow>([&] { e.set_marks(ms, ps); }, "prices[1]");
  EXPECT_EQ(e.mark(n), 0);
  EXPECT_EQ(e.mark(m), 5);
  // the boundary itself fits: 1000 * 4,611,686,018,427,387 = 4,611,686,018,427,387,000 <= 2^62
  mark(e, m, limit_price);
  const AccountMargin a = e.account_margin(1);
  // equity = 0 + 4,611,686,018,427,387,000 - 5,000
  EXPECT_EQ(a.equity, 4'611'686'018'427'382'000);
  // maintenance = ceil(4,611,686,018,427,387,000 * 1e6 / 1e8) = 46,116,860,184,273,870
  EXPECT_EQ(a.maintenance, 46'116'860'184'273'870);
  e.check_invariants();
  // a trade whose own value exceeds the range is refused too: 2 lots at 2^61 + 1 ticks
  expect_throw_with<ArithmeticOverflow>([&] { e.trade(1, 2, n, 2, (i64{1} << 61) + 1); }, "prices[0]");
  EXPECT_EQ(e.position_count(), 2u);
}

// ------------------------------------------------ position removal, relocation, compaction

namespace {
// The few lines of semantics.md "Trades" needed to follow sizes, entries and balances.
struct Book {
  std::map<std::pair<i64, MarketId>, std::pair<i64, i64>> pos;  // (account, market) -> (q, E)
  std::map<i64, i64> balance;

  void fill(i64 acc, MarketId m, i64 dq, i64 sv) {
    auto [q0, e0] = pos.count({acc, m}) ? pos[{acc, m}] : std::pair<i64, i64>{0, 0};
    const i64 q1 = q0 + dq;
    i64 e1;
    if (q0 == 0 || (q0 > 0) == (dq > 0))
      e1 = e0 + sv;
    else if ((dq < 0 ? -dq : dq) <= (q0 < 0 ? -q0 : q0))
      e1 = static_cast<i64>(static_cast<i128>(e0) * q1 / q0);
    else
      e1 = static_cast<i64>(static_cast<i128>(sv) * q1 / dq);
    balance[acc] += (e1 - e0) - sv;
    if (q1 == 0)
      pos.erase({acc, m});
    else
      pos[{acc, m}] = {q1, e1};
  }
};

void expect_matches(const Engine& e, const Book& book) {
  const PositionReport p = e.positions();
  ASSERT_EQ(p.account_id.size(), book.pos.size());
  ASSERT_EQ(e.position_count(), book.pos.size());
  std::map<std::pair<i64, MarketId>, std::pair<i64, i64>> got;
  for (std::size_t i = 0; i < p.account_id.size(); ++i)
    got[{p.account_id[i], p.market[i]}] = {p.size[i], p.entry_notional[i]};
  EXPECT_EQ(got, book.pos);
  for (const auto& [acc, bal] : book.balance) EXPECT_EQ(e.balance(acc), bal) << "account " << acc;
}
}  // namespace

TEST(Storage, RandomTradesBetweenAFewAccountsKeepTheBlocksConsistent) {
  // money 0, qty 0, price 0 (value = q * p, no rounding); 12 markets so that blocks outgrow
  // 4 and 8 slots; small sizes so that positions often close (removal) and flip.
  Engine e(0, 1);
  constexpr int kMarkets = 12;
  std::vector<MarketId> ms;
  std::vector<i64> ps;
  for (int i = 0; i < kMarkets; ++i) {
    ms.push_back(e.add_market(flat_market("M" + std::to_string(i), 0, 0, 1'000'000, 2'000'000)));
    ps.push_back(100);
  }
  e.set_marks(ms, ps);
  const i64 accounts[4] = {11, 22, 33, 44};
  Book book;
  for (i64 id : accounts) {
    dep(e, id, 1'000'000);
    book.balance[id] = 1'000'000;
  }
  std::mt19937_64 rng(7);
  std::size_t removals = 0, max_positions_per_account = 0;
  for (int t = 0; t < 3'000; ++t) {
    SCOPED_TRACE("trade " + std::to_string(t));
    const i64 b = accounts[rng() % 4];
    i64 s = accounts[rng() % 4];
    if (s == b) s = accounts[(std::find(accounts, accounts + 4, b) - accounts + 1) % 4];
    const MarketId m = static_cast<MarketId>(rng() % kMarkets);
    const i64 size = 1 + static_cast<i64>(rng() % 4);
    const i64 price = 90 + static_cast<i64>(rng() % 21);
    const std::size_t before = book.pos.size();
    e.trade(b, s, m, size, price);
    book.fill(b, m, size, size * price);
    book.fill(s, m, -size, -size * price);
    if (book.pos.size() < before) ++removals;
    ASSERT_NO_THROW(e.check_invariants());
    if (t % 100 == 0) {
      ASSERT_NO_FATAL_FAILURE(expect_matches(e, book));
      for (i64 id : accounts) {
        std::size_t n = 0;
        for (const auto& [key, qe] : book.pos) n += key.first == id;
        max_positions_per_account = std::max(max_positions_per_account, n);
      }
    }
  }
  expect_matches(e, book);
  EXPECT_GT(removals, 100u);                 // the removal path ran often
  EXPECT_GT(max_positions_per_account, 8u);  // some block grew past 4 and 8 slots
  // close everything: the book ends flat and the cash equals the deposits
  for (const auto& [key, qe] : std::map(book.pos)) {
    const auto [acc, m] = key;
    if (qe.first > 0) continue;  // close the shorts against the longs in the same market
    i64 need = -qe.first;
    for (const auto& [key2, qe2] : std::map(book.pos)) {
      if (key2.second != m || key2.first == acc || need == 0) continue;
      const i64 have = book.pos.count(key2) ? book.pos[key2].first : 0;
      if (have <= 0) continue;
      const i64 q = std::min(need, have);
      e.trade(acc, key2.first, m, q, 100);
      book.fill(acc, m, q, q * 100);
      book.fill(key2.first, m, -q, -q * 100);
      need -= q;
      e.check_invariants();
    }
  }
  EXPECT_EQ(e.position_count(), 0u);
  expect_matches(e, book);
  i64 total = 0;
  for (i64 id : accounts) total += e.balance(id);
  EXPECT_EQ(total, 4'000'000);  // nothing created or destroyed
}

TEST(Storage, RepeatedLoadsRelocateBlocksAndCompact) {
  // 128 accounts; round r loads one position per account in market r (even ids long 1 lot,
  // odd ids short 1 lot). Exact-fit loads move every block each round: after round r an
  // account has abandoned 0 + 1 + ... + (r - 1) = r(r-1)/2 slots out of r(r+1)/2.
  // Compaction needs >= 4096 abandoned and at least half of all slots: 128 * r(r-1)/2 >= 4096
  // first holds at r = 9 (128 * 36 = 4608), and 2 * 36 >= 45. So round 9 compacts and the
  // position columns shrink from 128 * 45 = 5760 slots to 128 * 9 = 1152.
  Engine e(0, 1);
  constexpr int kRounds = 12;
  std::vector<MarketId> ms;
  std::vector<i64> ps;
  for (int r = 0; r < kRounds; ++r) {
    ms.push_back(e.add_market(flat_market("L" + std::to_string(r), 0, 0, 1'000'000, 2'000'000)));
    ps.push_back(10 + r);
  }
  e.set_marks(ms, ps);
  std::vector<i64> ids;
  for (i64 i = 0; i < 128; ++i) ids.push_back(5'000 + i);
  for (i64 id : ids) dep(e, id, 1'000);
  Book book;
  for (i64 id : ids) book.balance[id] = 1'000;
  std::vector<std::size_t> memory;
  for (int r = 0; r < kRounds; ++r) {
    std::vector<i64> sizes, prices;
    std::vector<MarketId> markets;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      sizes.push_back(i % 2 ? -1 : 1);
      prices.push_back(10 + r);
      markets.push_back(r);
      book.pos[{ids[i], r}] = {sizes.back(), sizes.back() * (10 + r)};
    }
    e.load_positions(ids, markets, sizes, prices);
    ASSERT_NO_THROW(e.check_invariants());
    memory.push_back(e.memory_bytes());
  }
  expect_matches(e, book);
  EXPECT_EQ(e.position_count(), 128u * kRounds);
  // round 9 (index 8) compacted: less memory than after round 8 although it holds more positions
  EXPECT_LT(memory[8], memory[7]);
  for (int r = 1; r < 8; ++r) EXPECT_GE(memory[static_cast<std::size_t>(r)], memory[static_cast<std::size_t>(r - 1)]);

  // then random trades on the compacted storage (removals and relocations), invariants each time
  std::mt19937_64 rng(99);
  for (int t = 0; t < 2'000; ++t) {
    const i64 b = ids[rng() % ids.size()];
    i64 s = ids[rng() % ids.size()];
    if (s == b) s = b == ids[0] ? ids[1] : ids[0];
    const MarketId m = static_cast<MarketId>(rng() % kRounds);
    const i64 size = 1 + static_cast<i64>(rng() % 2);
    e.trade(b, s, m, size, 10 + m);
    book.fill(b, m, size, size * (10 + m));
    book.fill(s, m, -size, -size * (10 + m));
    ASSERT_NO_THROW(e.check_invariants()) << "trade " << t;
  }
  expect_matches(e, book);
}

// ------------------------------------------------------------------------ load refusals

TEST(Load, DuplicateRowsAndExistingPositionsAreRefused) {
  Engine e(0, 1);
  const MarketId m = e.add_market(flat_market("X", 0, 0, 1'000'000, 2'000'000));
  const MarketId n = e.add_market(flat_market("Y", 0, 0, 1'000'000, 2'000'000));
  for (i64 id : {1, 2, 3}) dep(e, id, 1'000);
  mark(e, m, 10);
  mark(e, n, 10);
  Snapshot before = snapshot(e);
  {
    // account 1 twice in market X (rows 0 and 2); the sizes net to 0, so only duplicates are wrong
    // (account 1 is checked first: accounts are visited in creation order)
    const i64 acc[4] = {1, 2, 1, 2}, q[4] = {1, -1, 1, -1}, p[4] = {10, 10, 10, 10};
    const MarketId mk[4] = {m, m, m, m};
    expect_throw_with<InvalidInput>([&] { e.load_positions(acc, mk, q, p); }, "markets[2]");
  }
  EXPECT_EQ(snapshot(e), before);
  {
    const i64 acc[2] = {1, 2}, q[2] = {4, -4}, p[2] = {10, 10};
    const MarketId mk[2] = {m, m};
    e.load_positions(acc, mk, q, p);  // E = +-40
  }
  before = snapshot(e);
  {
    // account 2 already holds X (row 1); account 3 is new and fine
    const i64 acc[2] = {3, 2}, q[2] = {-2, 2}, p[2] = {10, 10};
    const MarketId mk[2] = {m, m};
    expect_throw_with<InvalidInput>([&] { e.load_positions(acc, mk, q, p); }, "already has a position");
    expect_throw_with<InvalidInput>([&] { e.load_positions(acc, mk, q, p); }, "markets[1]");
  }
  EXPECT_EQ(snapshot(e), before);
  {
    // unknown account, unknown market, zero size, non-positive price, unbalanced book
    const i64 acc[2] = {3, 9}, q[2] = {1, -1}, p[2] = {10, 10};
    const MarketId mk[2] = {n, n};
    expect_throw_with<UnknownId>([&] { e.load_positions(acc, mk, q, p); }, "accounts[1]");
    const i64 acc_ok[2] = {3, 1};
    const MarketId bad_mk[2] = {n, 5};
    expect_throw_with<UnknownId>([&] { e.load_positions(acc_ok, bad_mk, q, p); }, "markets[1]");
    const i64 zero[2] = {1, 0};
    expect_throw_with<InvalidInput>([&] { e.load_positions(acc_ok, mk, zero, p); }, "sizes[1]");
    const i64 bad_p[2] = {10, -10};
    expect_throw_with<InvalidInput>([&] { e.load_positions(acc_ok, mk, q, bad_p); }, "entry_prices[1]");
    const i64 unbalanced[2] = {1, -2};
    expect_throw_with<InvalidInput>([&] { e.load_positions(acc_ok, mk, unbalanced, p); }, "not balanced");
    expect_throw_with<UnknownId>([&] { e.load_positions(acc_ok, mk, unbalanced, p, i64{42}); }, "counterparty");
  }
  EXPECT_EQ(snapshot(e), before);
  e.check_invariants();
  // the counterparty may already hold the market: its position grows (X: 2 had -4 at 10)
  {
    const i64 acc[1] = {3}, q[1] = {3}, p[1] = {12};
    const MarketId mk[1] = {m};
    e.load_positions(acc, mk, q, p, i64{2});
  }
  // 3: +3, E = 36; 2: -4 - 3 = -7, E = -40 - 36 = -76
  const PositionReport pr = e.positions();
  ASSERT_EQ(pr.account_id.size(), 3u);
  EXPECT_EQ(pr.account_id[1], 2);
  EXPECT_EQ(pr.size[1], -7);
  EXPECT_EQ(pr.entry_notional[1], -76);
  EXPECT_EQ(pr.size[2], 3);
  EXPECT_EQ(pr.entry_notional[2], 36);
  e.check_invariants();
  // a load that leaves the counterparty flat realizes its entry: 4 loads -7 X at 11 (E = -77);
  // 2 takes +7 with E +77: (-7, -76) + (7, 77) = (0, 1) -> removed, balance 1,000 - 1 = 999
  dep(e, 4, 0);
  {
    const i64 acc[1] = {4}, q[1] = {-7}, p[1] = {11};
    const MarketId mk[1] = {m};
    e.load_positions(acc, mk, q, p, i64{2});
  }
  EXPECT_EQ(e.balance(2), 999);
  EXPECT_EQ(e.position_count(), 3u);  // 1: +4, 3: +3, 4: -7
  e.check_invariants();
}
