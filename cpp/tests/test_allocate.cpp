// The allocation kernel on small cases worked out by hand from the definitions in allocate.hpp.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "deleverage/allocate.hpp"

using namespace deleverage;

namespace {

AllocRequest<i64> req(const char* policy, i64 budget, const std::vector<i64>& w) {
  AllocRequest<i64> r;
  r.policy = parse_policy(policy);
  r.budget = budget;
  r.capacity = w;
  return r;
}

}  // namespace

TEST(Allocate, QueueTakesByDescendingScore) {
  // order by score: #1 (3.0), #2 (2.0), #0 (1.0); #1 gives all 3, #2 gives the remaining 3 of its 4
  std::vector<i64> w{5, 3, 4};
  std::vector<double> s{1.0, 3.0, 2.0};
  auto r = req("queue", 6, w);
  r.score = s;
  EXPECT_EQ(allocate(r), (std::vector<i64>{0, 3, 3}));
}

TEST(Allocate, QueueTiesGoToTheSmallerIndex) {
  std::vector<i64> w{4, 4, 4};
  std::vector<double> s{1.0, 1.0, 1.0};
  auto r = req("queue", 6, w);
  r.score = s;
  EXPECT_EQ(allocate(r), (std::vector<i64>{4, 2, 0}));
}

TEST(Allocate, ProRataLargestRemainder) {
  // 4 * (1, 2, 3) / 6 = (0.667, 1.333, 2): floors (0, 1, 2) = 3, the leftover unit goes to #0 (2/3)
  std::vector<i64> w{1, 2, 3};
  EXPECT_EQ(allocate(req("pro_rata", 4, w)), (std::vector<i64>{1, 1, 2}));
}

TEST(Allocate, CappedProRataWaterFills) {
  // caps K = (10, 100, 100); 10 + 200 * tau = 90 -> tau = 0.4 -> (10, 40, 40)
  std::vector<i64> w{100, 100, 100}, cap{10'000'000, 100'000'000, 100'000'000};
  auto r = req("capped_pro_rata", 90, w);
  r.cap = cap;
  EXPECT_EQ(allocate(r), (std::vector<i64>{10, 40, 40}));
}

TEST(Allocate, RiskAwareLinear) {
  // lambda = (1, 2), g linear: weights 1 and 4 -> 50 * (1/5, 4/5) = (10, 40)
  std::vector<i64> w{100, 100}, lev{100'000'000, 200'000'000};
  auto r = req("risk_aware", 50, w);
  r.leverage = lev;
  EXPECT_EQ(allocate(r), (std::vector<i64>{10, 40}));
}

TEST(Allocate, MinMaxLots) {
  // lot 2, B = 5 -> 3 lots. Fractions of successive lots: #0: .2 .4 .6 .8 1; #1: .5 1.
  // The three smallest are .2, .4 (#0) and .5 (#1): (4, 2), largest fraction 0.5.
  std::vector<i64> w{10, 4};
  auto r = req("min_max_lots", 5, w);
  r.lot = 2;
  EXPECT_EQ(allocate(r), (std::vector<i64>{4, 2}));
}

TEST(Allocate, RandomWalkStartsAtSplitmix) {
  // splitmix64(0) = 0xE220A8397B1DCDAF (the generator's published first output); mod 3 = 1, mod 4 = 3
  EXPECT_EQ(random_walk_start(0, 3), 1u);
  EXPECT_EQ(random_walk_start(0, 4), 3u);
  std::vector<i64> w{5, 5, 5};
  auto r = req("random_walk", 7, w);
  r.seed = 0;
  // walk #1 (5), then #2 (the remaining 2)
  EXPECT_EQ(allocate(r), (std::vector<i64>{0, 5, 2}));
}

TEST(Allocate, FloatProRata) {
  std::vector<double> w{1.0, 3.0};
  AllocRequest<double> r;
  r.policy = Policy::ProRata;
  r.budget = 2.0;
  r.capacity = w;
  auto x = allocate(r);
  EXPECT_DOUBLE_EQ(x[0], 0.5);
  EXPECT_DOUBLE_EQ(x[1], 1.5);
}

TEST(Allocate, LargeCappedSumsExactly) {
  std::vector<i64> w(100'000), cap(100'000);
  for (std::size_t i = 0; i < w.size(); ++i) {
    w[i] = static_cast<i64>((i * 7919) % 100'003 + 1);
    cap[i] = static_cast<i64>((i * 104'729) % 100'000'001);
  }
  auto r = req("capped_pro_rata", 1'234'567, w);
  r.cap = cap;
  auto x = allocate(r);
  EXPECT_EQ(std::accumulate(x.begin(), x.end(), i64{0}), 1'234'567);
  for (std::size_t i = 0; i < w.size(); ++i) {
    ASSERT_GE(x[i], 0);
    ASSERT_LE(static_cast<__int128>(x[i]) * 100'000'000, static_cast<__int128>(w[i]) * cap[i]);
  }
}

TEST(Allocate, BadInput) {
  std::vector<i64> w{1, -2};
  EXPECT_THROW(allocate(req("pro_rata", 1, w)), InvalidInput);
  std::vector<i64> ok{1, 2};
  EXPECT_THROW(allocate(req("pro_rata", 4, ok)), InvalidInput);  // above total capacity
  auto clipped = req("pro_rata", 4, ok);
  clipped.clip = true;
  EXPECT_EQ(allocate(clipped), (std::vector<i64>{1, 2}));
  EXPECT_THROW(parse_policy("fifo"), InvalidInput);
  auto lots = req("min_max_lots", 1, ok);
  lots.lot = 0;
  EXPECT_THROW(allocate(lots), InvalidInput);
  std::vector<i64> cap{200'000'000, 1};
  auto capped = req("capped_pro_rata", 1, ok);
  capped.cap = cap;
  try {
    allocate(capped);
    FAIL() << "cap above 1 accepted";
  } catch (const InvalidInput& e) {
    EXPECT_NE(std::string(e.what()).find("cap[0]"), std::string::npos);
  }
}

// Large inputs: above 4096 winners the kernel guesses its selections from a sample, above
// 65536 its passes run in eight slices on several threads. Equal capacities make every
// comparison a tie, so the expected amounts follow from the tie rules by hand.
TEST(Allocate, ManyEqualWinnersProRataUnitsGoByIndex) {
  const std::size_t n = 100'003;
  std::vector<i64> w(n, 10);
  const i64 b = 7 * static_cast<i64>(n) + 12'345;  // 7 each, 12345 units left over
  const auto x = allocate(req("pro_rata", b, w));
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(x[i], i < 12'345 ? 8 : 7) << i;
}

TEST(Allocate, ManyEqualWinnersMinMaxLotsGoByIndex) {
  const std::size_t n = 100'003;
  std::vector<i64> w(n, 10);
  auto r = req("min_max_lots", 5 * (static_cast<i64>(n) + 4) - 2, w);  // n + 4 lots of 5
  r.lot = 5;
  const auto x = allocate(r);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(x[i], i < 4 ? 10 : 5) << i;
}

TEST(Allocate, ManyWinnersQueueEqualScoresGoByIndex) {
  const std::size_t n = 100'003;
  std::vector<i64> w(n, 10);
  std::vector<double> s(n, 1.0);
  s[n - 1] = 2.0;  // the last winner ranks first
  auto r = req("queue", 10 * 500 + 3, w);
  r.score = s;
  const auto x = allocate(r);
  ASSERT_EQ(x[n - 1], 10);
  for (std::size_t i = 0; i + 1 < n; ++i) ASSERT_EQ(x[i], i < 499 ? 10 : (i == 499 ? 3 : 0)) << i;
}

TEST(Allocate, ManyWinnersCappedProRataEqualCaps) {
  // caps of 50% on w = 10 (K = 5) for even indices, 100% for odd ones. B = 4 per winner:
  // tau * 10 = 4 < 5 everywhere -> 4 each, nobody capped.
  const std::size_t n = 100'000;
  std::vector<i64> w(n, 10), cap(n);
  for (std::size_t i = 0; i < n; ++i) cap[i] = i % 2 == 0 ? 50'000'000 : 100'000'000;
  auto r = req("capped_pro_rata", 4 * static_cast<i64>(n), w);
  r.cap = cap;
  for (i64 v : allocate(r)) ASSERT_EQ(v, 4);
  // B = 6 per winner: the even ones cap at 5, the odd ones take 7 (5 + 10 tau = 12 -> tau 0.7)
  r.budget = 6 * static_cast<i64>(n);
  const auto x = allocate(r);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(x[i], i % 2 == 0 ? 5 : 7) << i;
}
