// The incremental check on a book large enough (>= 2^16 positions) that moving many markets
// switches it to one full pass: both paths must agree with a fresh full check.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "deleverage/engine.hpp"

using namespace deleverage;

namespace {
void expect_matches_full(Engine& inc, Engine& full, const MarginReport& r) {
  const MarginReport f = full.check_margin();
  std::map<i64, std::size_t> row;
  for (std::size_t a = 0; a < f.account_id.size(); ++a) row[f.account_id[a]] = a;
  for (std::size_t i = 0; i < r.account_id.size(); ++i) {
    const std::size_t a = row.at(r.account_id[i]);
    ASSERT_EQ(r.equity[i], f.equity[a]);
    ASSERT_EQ(r.maintenance[i], f.maintenance[a]);
    ASSERT_EQ(r.initial[i], f.initial[a]);
    ASSERT_EQ(r.liquidatable[i], f.liquidatable[a]);
  }
  for (std::size_t i = 1; i < r.account_id.size(); ++i) ASSERT_LT(row.at(r.account_id[i - 1]), row.at(r.account_id[i]));
  inc.check_invariants();
}
}  // namespace

TEST(IncrementalLarge, WalkAndFullPassAgreeWithTheFullCheck) {
  Engine inc(6, 2), full(6, 2);
  const int markets = 40;
  std::mt19937_64 rng(11);
  std::vector<MarketId> ms;
  std::vector<i64> px;
  for (int m = 0; m < markets; ++m) {
    MarketSpec s;
    s.symbol = "M" + std::to_string(m);
    s.qty_decimals = 3;
    s.price_decimals = 2;
    s.maintenance_rate = 500'000 + 10'000 * m;
    s.initial_rate = 1'000'000 + 10'000 * m;
    if (m % 5 == 0)
      s.tiers = {TierSpec{100'000'000, s.maintenance_rate, s.initial_rate, -1},
                 TierSpec{0, s.maintenance_rate * 2, s.initial_rate * 2, -1}};
    inc.add_market(s);
    full.add_market(s);
    ms.push_back(m);
    px.push_back(1'000 + static_cast<i64>(rng() % 100'000));
  }
  inc.set_marks(ms, px);
  full.set_marks(ms, px);
  const i64 n_accounts = 8'000;
  std::vector<i64> ids, amounts;
  for (i64 a = 0; a <= n_accounts; ++a) {
    ids.push_back(a);
    amounts.push_back(a == 0 ? i64{1} << 50 : 1'000'000 + static_cast<i64>(rng() % 50'000'000));
  }
  inc.deposit(ids, amounts);
  full.deposit(ids, amounts);
  std::vector<i64> acc, q, p;
  std::vector<MarketId> mk;
  for (i64 a = 1; a <= n_accounts; ++a)
    for (int j = 0; j < 9; ++j) {
      acc.push_back(a);
      mk.push_back(static_cast<MarketId>((a * 7 + j) % markets));
      q.push_back((static_cast<i64>(rng() % 20'000) + 1) * ((rng() & 1) ? 1 : -1));
      p.push_back(px[static_cast<std::size_t>(mk.back())] + static_cast<i64>(rng() % 200) - 100);
    }
  inc.load_positions(acc, mk, q, p, i64{0});
  full.load_positions(acc, mk, q, p, i64{0});
  ASSERT_GE(inc.position_count(), std::size_t{1} << 16);
  inc.check_margin();
  for (int round = 0; round < 12; ++round) {
    // 1, 3 or 20 markets: each holds ~2.5% of the positions, above the 1/50 share, so every
    // round takes the full pass (the walk is covered by the smaller books of the other tests)
    const int k = round % 3 == 0 ? 1 : (round % 3 == 1 ? 3 : 20);
    std::vector<MarketId> moved;
    std::vector<i64> prices;
    for (int i = 0; i < k; ++i) {
      const MarketId m = static_cast<MarketId>((round * 7 + i) % markets);
      moved.push_back(m);
      px[static_cast<std::size_t>(m)] =
          std::max<i64>(1, px[static_cast<std::size_t>(m)] + static_cast<i64>(rng() % 2001) - 1000);
      prices.push_back(px[static_cast<std::size_t>(m)]);
    }
    inc.set_marks(moved, prices);
    full.set_marks(moved, prices);
    const MarginReport r = inc.check_margin(moved);
    ASSERT_GT(r.account_id.size(), 0u);
    expect_matches_full(inc, full, r);
  }
}
