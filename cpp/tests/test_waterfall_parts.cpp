// Hand cases for each part of the waterfall (cpp/src/waterfall/): settlement (surplus and
// fee, deficit and fund), the last resort (queue close, pro-rata split, haircut), the kept ADL
// queue (order and ties, lazy re-scoring, staleness, partial selection) and the run loop
// (the cascade inside a per-account call, batch step = per-account calls). The expected
// numbers are worked out in the comments from docs/waterfall.md (sections in brackets);
// money_decimals 0, one market with lots and ticks of 1, so value(q, p) = q * p.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "deleverage/detail/adl_queue.hpp"
#include "deleverage/engine.hpp"
#include "test_helpers.hpp"

using namespace deleverage;
using deleverage::testing::dep;
using deleverage::testing::mark;

namespace {

constexpr i64 kMM = 99;  // market maker / executor, huge collateral

Engine one_market(i64 fee_rate = 0) {
  Engine e(0, 1);
  MarketSpec s;
  s.symbol = "M";
  s.maintenance_rate = 5'000'000;  // 5%
  s.initial_rate = 10'000'000;
  s.liquidation_fee_rate = fee_rate;
  e.add_market(s);
  dep(e, kMM, 1'000'000'000);
  return e;
}

void load(Engine& e, std::vector<i64> accounts, std::vector<i64> sizes, std::vector<i64> prices) {
  const std::vector<MarketId> markets(accounts.size(), 0);
  e.load_positions(accounts, markets, sizes, prices, kMM);
}

WaterfallConfig close_with(i64 slippage_rate, Policy policy = Policy::Queue) {
  WaterfallConfig c;
  c.executor.account = kMM;
  c.executor.slippage_rate = slippage_rate;
  c.policy = policy;
  return c;
}

i64 position(const Engine& e, i64 account) {
  const PositionReport p = e.positions();
  for (std::size_t i = 0; i < p.account_id.size(); ++i)
    if (p.account_id[i] == account) return p.size[i];
  return 0;
}

std::size_t count(const WaterfallResult& r, EventKind k, i64 account) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < r.events.size_(); ++i)
    if (r.events.kind[i] == static_cast<std::uint8_t>(k) && r.events.account[i] == account) ++n;
  return n;
}

// ------------------------------------------------------------------ settlement [2, 3]

TEST(WaterfallSettlement, SurplusPaysTheFeeToTheFund) {
  // long 10 @ 100, balance 60, mark 95: equity 60 - 50 = 10 < maintenance 47.5 -> 48.
  // e' = (60 - 1000) + 950 = 10, bk value 940; the executor (no slippage) pays 950: surplus
  // 10, fee = min(10, ceil(950 * 1%) = 10) = 10 to the fund; the account ends at 0.
  Engine e = one_market(1'000'000);
  dep(e, 1, 60);
  load(e, {1}, {10}, {100});
  mark(e, 0, 95);
  const std::vector<i64> who{1};
  const WaterfallResult r = e.liquidate(close_with(0), who);
  EXPECT_EQ(e.balance(1), 0);
  EXPECT_EQ(position(e, 1), 0);
  EXPECT_EQ(e.insurance().balance(0), 10);
  EXPECT_EQ(r.totals.fund_fees, 10);
  EXPECT_EQ(r.totals.deficit, 0);
}

TEST(WaterfallSettlement, PartialCloseOfAHugePositionIsSizedWithoutOverflow) {
  // Long 2^50 lots @ 200 (value 2^50 * 200 ~ 2.25e17, maintenance 5% ~ 1.13e16) with equity
  // 5e15: the partial close is ceil(2^50 * (mm - equity) / mm) lots, about 0.556 of the
  // position; |q| * (mm - equity) * 1e8 is ~2^129, past a 128-bit product. The close must
  // reduce the long (a sale), leave it open and restore maintenance.
  Engine e = one_market();
  dep(e, kMM, i64{1} << 61);
  const i64 q = i64{1} << 50;
  dep(e, 1, 5'000'000'000'000'000);
  load(e, {1}, {q}, {200});
  mark(e, 0, 200);
  WaterfallConfig c = close_with(0);
  c.executor.partial = true;
  const std::vector<i64> who{1};
  const WaterfallResult r = e.liquidate(c, who);
  ASSERT_EQ(r.totals.partial_liquidations, 1);
  const i64 left = position(e, 1);
  EXPECT_GT(left, 0);
  EXPECT_LT(left, q);
  // 5% of the value left is covered by the equity (a sale at the mark moves no equity)
  EXPECT_GE(5'000'000'000'000'000 * 20, left * 200);
  e.check_invariants();
}

TEST(WaterfallSettlement, DeficitIsPaidByTheFund) {
  // balance 40: e' = -10, bk value 960, executor value 950: deficit 10; the fund (100) pays
  // it, the account ends at 40 + 950 - 1000 + 10 = 0 and the fund at 90.
  Engine e = one_market();
  dep(e, 1, 40);
  load(e, {1}, {10}, {100});
  e.insurance_deposit(100, 0);
  mark(e, 0, 95);
  const std::vector<i64> who{1};
  const WaterfallResult r = e.liquidate(close_with(0), who);
  EXPECT_EQ(e.balance(1), 0);
  EXPECT_EQ(e.insurance().balance(0), 90);
  EXPECT_EQ(r.totals.fund_used, 10);
  EXPECT_EQ(r.totals.adl_closes, 0);
}

// ------------------------------------------------------------------ last resort [3, 5, 6]

// Bankrupt long 10 @ 100 with balance 40 at mark 95 (bk value 960); the executor with 1%
// slippage sells at floor(95 * 0.99) = 94 (value 940): deficit 20, empty fund, so all 10
// lots go to ADL (ceil(10 * 20 / 20)) at the bankruptcy value 960.
Engine bankrupt_against(std::vector<i64> winners, std::vector<i64> sizes) {
  Engine e = one_market();
  dep(e, 1, 40);
  std::vector<i64> accounts{1}, q{10}, px{100};
  for (std::size_t i = 0; i < winners.size(); ++i) {
    dep(e, winners[i], 1000);
    accounts.push_back(winners[i]);
    q.push_back(-sizes[i]);
    px.push_back(100);
  }
  load(e, accounts, q, px);
  mark(e, 0, 95);
  return e;
}

TEST(WaterfallLastResort, QueueClosesAtTheBankruptcyValue) {
  // the winner short 10 @ 100 buys them back for 960: it realizes 1000 - 960 = 40.
  Engine e = bankrupt_against({2}, {10});
  const std::vector<i64> who{1};
  const WaterfallResult r = e.liquidate(close_with(1'000'000), who);
  EXPECT_EQ(r.totals.adl_closes, 1);
  EXPECT_EQ(r.totals.adl_notional, 960);
  EXPECT_EQ(e.balance(1), 0);
  EXPECT_EQ(e.balance(2), 1040);
  EXPECT_EQ(position(e, 2), 0);
  e.check_invariants();
}

TEST(WaterfallLastResort, ProRataSplitsLotsAndValue) {
  // winners short 6 and 4: x = 6 and 4 lots; the value splits by lots, trunc(960 * 6 / 10)
  // = 576 and the rest 384: balances 1000 + 600 - 576 = 1024 and 1000 + 400 - 384 = 1016.
  Engine e = bankrupt_against({2, 3}, {6, 4});
  const std::vector<i64> who{1};
  e.liquidate(close_with(1'000'000, Policy::ProRata), who);
  EXPECT_EQ(e.balance(2), 1024);
  EXPECT_EQ(e.balance(3), 1016);
  EXPECT_EQ(e.balance(1), 0);
}

TEST(WaterfallLastResort, HaircutTakesTheDeficitFromProfit) {
  // haircut mode: the executor takes all 10 lots for 940, the account is left at -20; the
  // winner (short 10 @ 100, profit 50 at 95) pays 20, credited to the account.
  Engine e = bankrupt_against({2}, {10});
  WaterfallConfig c = close_with(1'000'000);
  c.mode = WaterfallMode::Haircut;
  const std::vector<i64> who{1};
  const WaterfallResult r = e.liquidate(c, who);
  EXPECT_EQ(r.totals.haircut_total, 20);
  EXPECT_EQ(e.balance(1), 0);
  EXPECT_EQ(e.balance(2), 980);
  EXPECT_EQ(position(e, 2), -10);
}

// ------------------------------------------------------------------ the kept queue [7, 9]

// The queue's own heap against the standard library's on the same entries: pops come out in
// the same (score, id) order, with pushes interleaved, many equal scores and a heap that
// shrinks to empty and grows again.
TEST(WaterfallQueue, HeapWalkPopsInTheStandardOrder) {
  std::mt19937_64 rng(11);
  detail::AdlEntries mine;
  std::vector<detail::AdlEntry> reference;
  // account k has id ids[k]: not in account order, so a tie broken by account would fail
  std::vector<i64> ids(8000);
  for (std::size_t k = 0; k < ids.size(); ++k) ids[k] = static_cast<i64>((k * 7919) % ids.size()) + 1;
  const detail::AdlEntryAfter after{ids.data()};
  std::uint32_t next_account = 0;
  for (int round = 0; round < 2000; ++round) {
    const int pushes = static_cast<int>(rng() % 7);
    for (int i = 0; i < pushes; ++i) {
      const detail::AdlEntry e{static_cast<i64>(rng() % 16) - 8, next_account++ % 8000, 0};
      detail::adl_heap_push(mine, e, after);
      reference.push_back(e);
      std::push_heap(reference.begin(), reference.end(), after);
    }
    const int pops = static_cast<int>(rng() % 6);
    for (int i = 0; i < pops && !reference.empty(); ++i) {
      std::pop_heap(reference.begin(), reference.end(), after);
      const detail::AdlEntry want = reference.back();
      reference.pop_back();
      ASSERT_FALSE(mine.empty());
      const detail::AdlEntry got = detail::adl_heap_pop(mine, after);
      ASSERT_EQ(got.score, want.score) << "round " << round;
      ASSERT_EQ(got.account, want.account) << "round " << round;
    }
    ASSERT_EQ(mine.size(), reference.size());
  }
}

// A heap built at once pops every entry in (score, id) order, for every size up to a few levels.
TEST(WaterfallQueue, HeapBuiltAtOncePopsInOrder) {
  std::mt19937_64 rng(5);
  std::vector<i64> ids(90);
  for (std::size_t k = 0; k < ids.size(); ++k) ids[k] = 1000 - 3 * static_cast<i64>(k);
  const detail::AdlEntryAfter after{ids.data()};
  for (std::size_t n = 0; n < 90; ++n) {
    detail::AdlEntries h;
    for (std::size_t i = 0; i < n; ++i)
      h.push_back(detail::AdlEntry{static_cast<i64>(rng() % 9), static_cast<std::uint32_t>(i), 0});
    std::vector<detail::AdlEntry> want(h.begin(), h.end());
    std::sort(want.begin(), want.end(),
              [&](const detail::AdlEntry& x, const detail::AdlEntry& y) { return after(y, x); });
    detail::adl_heap_make(h, after);
    for (const detail::AdlEntry& w : want) {
      const detail::AdlEntry got = detail::adl_heap_pop(h, after);
      ASSERT_EQ(got.score, w.score) << "n " << n;
      ASSERT_EQ(got.account, w.account) << "n " << n;
    }
    ASSERT_TRUE(h.empty());
  }
}

TEST(WaterfallQueue, EqualScoresRankBySmallerId) {
  Engine e = one_market();
  for (i64 a : {7, 3, 5}) dep(e, a, 1000);
  load(e, {7, 3, 5}, {-4, -4, -4}, {100, 100, 100});
  mark(e, 0, 90);
  EXPECT_EQ(e.adl_rank(3, 0, Ranking::BitMEX).rank, 1);
  EXPECT_EQ(e.adl_rank(5, 0, Ranking::BitMEX).rank, 2);
  EXPECT_EQ(e.adl_rank(7, 0, Ranking::BitMEX).rank, 3);
  EXPECT_EQ(e.adl_rank(7, 0, Ranking::BitMEX).side_count, 3);
}

TEST(WaterfallQueue, ADepositIsRescoredAndAMarkMoveRefreshes) {
  // Same positions; a deposit lowers account 3's leverage, so its BitMEX score (pnl% x
  // leverage) falls below the others' at the queue's next use, with no mark move.
  Engine e = one_market();
  for (i64 a : {3, 5}) dep(e, a, 1000);
  load(e, {3, 5}, {-4, -4}, {100, 100});
  mark(e, 0, 90);
  EXPECT_EQ(e.adl_rank(3, 0, Ranking::BitMEX).rank, 1);
  dep(e, 3, 5000);
  EXPECT_EQ(e.adl_rank(3, 0, Ranking::BitMEX).rank, 2);
  // interval of 2 updates: account 5's score stays that of mark 90 after one update
  e.set_adl_refresh(AdlRefresh::Interval, 2);
  const i64 before = e.adl_rank(5, 0, Ranking::BitMEX).score;
  mark(e, 0, 80);
  EXPECT_EQ(e.adl_rank(5, 0, Ranking::BitMEX).score, before);
  mark(e, 0, 81);
  EXPECT_NE(e.adl_rank(5, 0, Ranking::BitMEX).score, before);
  EXPECT_THROW(e.set_adl_refresh(AdlRefresh::Interval, 0), InvalidInput);
}

TEST(WaterfallQueue, PopsFollowTheRankingAcrossSelections) {
  // 700 short winners with distinct deposits (distinct leverage, so distinct scores) against
  // one bankrupt long that needs all their lots: the ADL closes must come in rank order,
  // across several partial selections of the queue's head.
  Engine e = one_market();
  const i64 n = 700;
  std::vector<i64> accounts{1}, q{n}, px{100};
  dep(e, 1, 4 * n);  // equity 4n - 5n < 0: bankrupt; 1% slippage leaves a deficit, all ADL
  for (i64 i = 0; i < n; ++i) {
    dep(e, 1000 + i, 200 + 7 * ((i * 37) % n));
    accounts.push_back(1000 + i);
    q.push_back(-1);
    px.push_back(100);
  }
  load(e, accounts, q, px);
  mark(e, 0, 95);
  const AdlRankingReport table = e.adl_ranking(0, Ranking::BitMEX);
  std::vector<std::pair<i64, i64>> expected;  // (rank, account) of the shorts
  for (std::size_t i = 0; i < table.account.size(); ++i)
    if (table.side[i] < 0) expected.push_back({table.rank[i], table.account[i]});
  std::sort(expected.begin(), expected.end());
  const std::vector<i64> who{1};
  const WaterfallResult r = e.liquidate(close_with(1'000'000), who);
  std::vector<i64> got;
  for (std::size_t i = 0; i < r.events.size_(); ++i)
    if (r.events.kind[i] == static_cast<std::uint8_t>(EventKind::AdlClose)) got.push_back(r.events.account[i]);
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expected[i].second) << "close " << i;
}

// Work bounds of the kept queue: a winner that cannot pay is met once per step, not once per
// close. K bankrupt longs (1 lot @ 100, balance 4: equity -1 at 95; the executor's 1%
// slippage leaves a deficit of 2, so the lot goes to ADL or, in haircut mode, the 2 are a
// haircut) against P shorts at the head of the queue that cannot pay and H healthy shorts
// (10 @ 100, balance 1000). Before the queue parked such entries, every close popped all P.
constexpr i64 kLongs = 100, kStuck = 100, kHealthy = 100;

Engine head_of_queue_cannot_pay(i64 stuck_entry, i64 stuck_balance) {
  Engine e = one_market();
  std::vector<i64> accounts, q, px, stuck_ids, stuck_balances;
  for (i64 i = 0; i < kLongs; ++i) {
    dep(e, 1000 + i, 4);
    accounts.push_back(1000 + i), q.push_back(1), px.push_back(100);
  }
  for (i64 i = 0; i < kStuck; ++i) {
    stuck_ids.push_back(2000 + i);
    stuck_balances.push_back(stuck_balance);
    accounts.push_back(2000 + i), q.push_back(-10), px.push_back(stuck_entry);
  }
  e.load_balances(stuck_ids, stuck_balances);
  for (i64 i = 0; i < kHealthy; ++i) {
    dep(e, 3000 + i, 1000 + i);  // distinct leverage, distinct scores
    accounts.push_back(3000 + i), q.push_back(-10), px.push_back(100);
  }
  load(e, accounts, q, px);
  mark(e, 0, 95);
  return e;
}

std::vector<i64> the_longs() {
  std::vector<i64> who;
  for (i64 i = 0; i < kLongs; ++i) who.push_back(1000 + i);
  return who;
}

bool touches_stuck(const WaterfallResult& r) {
  for (std::size_t i = 0; i < r.events.size_(); ++i)
    if (r.events.account[i] >= 2000 && r.events.account[i] < 3000) return true;
  return false;
}

TEST(WaterfallQueue, LiquidatableWinnersArePoppedOncePerStep) {
  // stuck shorts: 10 @ 100 with balance -10: profit 50, equity 40 < maintenance 48, so
  // liquidatable (never winners) and, at leverage 950/40, first in the BitMEX queue.
  Engine e = head_of_queue_cannot_pay(100, -10);
  const std::vector<i64> who = the_longs();
  const WaterfallResult r = e.liquidate(close_with(1'000'000), who);
  EXPECT_EQ(r.totals.adl_closes, kLongs);
  EXPECT_EQ(r.totals.liquidated_accounts, kLongs);
  EXPECT_FALSE(touches_stuck(r));
  const AdlQueueStats shorts = e.adl_queue_stats(0, -1);
  EXPECT_EQ(shorts.parked, kStuck);
  EXPECT_LE(shorts.pops, 4 * (kLongs + kStuck)) << "each close re-popped the stuck entries";
  e.check_invariants();
}

TEST(WaterfallQueue, AMarkMoveReleasesParkedEntries) {
  // After the step above, in interval mode (no refresh on this move): at 90 the stuck shorts
  // have profit 100, equity 90 >= maintenance 45, so they are winners again, and their kept
  // (stale) scores still put them first: a new bankrupt long (1 @ 100, balance 9: equity -1)
  // is deleveraged against the smallest of their ids.
  Engine e = head_of_queue_cannot_pay(100, -10);
  const std::vector<i64> who = the_longs();
  e.liquidate(close_with(1'000'000), who);
  dep(e, 4000, 9);
  load(e, {4000}, {1}, {100});
  e.set_adl_refresh(AdlRefresh::Interval, 10);
  mark(e, 0, 90);
  const std::vector<i64> late{4000};
  const WaterfallResult r = e.liquidate(close_with(1'000'000), late);
  ASSERT_EQ(r.totals.adl_closes, 1);
  EXPECT_EQ(e.adl_queue_stats(0, -1).parked, 0);
  for (std::size_t i = 0; i < r.events.size_(); ++i)
    if (r.events.kind[i] == static_cast<std::uint8_t>(EventKind::AdlClose)) EXPECT_EQ(r.events.account[i], 2000);
  e.check_invariants();
}

TEST(WaterfallQueue, HaircutsSetAsideWinnersWithNothingToTake) {
  // haircut mode, Hyperliquid ranking: stuck shorts 10 @ 90 with balance 100 are losing (no
  // profit to take: capacity 0) but, at leverage 950/50, first in the queue; the haircuts
  // come from the healthy shorts and walk the queue, not the holders.
  Engine e = head_of_queue_cannot_pay(90, 100);
  WaterfallConfig c = close_with(1'000'000);
  c.mode = WaterfallMode::Haircut;
  c.ranking = Ranking::Hyperliquid;
  const std::vector<i64> who = the_longs();
  const WaterfallResult r = e.liquidate(c, who);
  EXPECT_EQ(r.totals.haircut_total, 2 * kLongs);
  EXPECT_EQ(r.totals.bad_debt, 0);
  EXPECT_FALSE(touches_stuck(r));
  // each healthy short has 50 of profit, 25 haircuts of 2: the first three run dry and are
  // met once more each (set aside too); the fourth pays the last haircut exactly
  const AdlQueueStats shorts = e.adl_queue_stats(0, -1);
  EXPECT_EQ(shorts.aside, kStuck + 3);
  EXPECT_LE(shorts.pops, 4 * (kLongs + kStuck));
  e.check_invariants();
}

// ------------------------------------------------------------------ the run loop [1, 10]

// A (long 10 @ 100, balance 50) is bankrupt at 90; W (short 20 @ 90, balance 92) is the only
// winner. The executor with 1% slippage: deficit 950 - 891 = 59, all ADL at bk price 95: W
// loses 5 on 10 lots, equity 42 < maintenance 45 on its last 10 lots: the cascade.
Engine cascade_book() {
  Engine e = one_market();
  dep(e, 1, 50);
  dep(e, 2, 92);
  load(e, {1, 2}, {10, -20}, {100, 90});
  mark(e, 0, 90);
  return e;
}

TEST(WaterfallRun, CascadeInsideAPerAccountCall) {
  Engine e = cascade_book();
  const std::vector<i64> who{1};
  const WaterfallResult r = e.liquidate(close_with(1'000'000), who);
  EXPECT_EQ(count(r, EventKind::AdlClose, 2), 1u);
  EXPECT_EQ(count(r, EventKind::LiquidationFill, 2), 1u);
  EXPECT_EQ(r.totals.liquidated_accounts, 2);
  EXPECT_TRUE(r.skipped.empty());
  EXPECT_EQ(position(e, 2), 0);
  e.check_invariants();
}

TEST(WaterfallRun, SkipsAndReports) {
  Engine e = cascade_book();
  dep(e, 7, 5);
  const std::vector<i64> who{7, 2, kMM, 1, 1};
  const WaterfallResult r = e.liquidate(close_with(1'000'000), who);
  EXPECT_EQ(r.skipped, (std::vector<i64>{7, 2, kMM, 1}));
  const std::vector<i64> unknown{1, 4242};
  const i64 step = e.step();
  EXPECT_THROW(e.liquidate(close_with(0), unknown), UnknownId);
  EXPECT_EQ(e.step(), step);
}

TEST(WaterfallRun, BatchStepEqualsPerAccountCalls) {
  // two bankrupt longs (A worse than B) against three shorts: the batch step and the two
  // per-account calls in worst-first order end in the same balances and positions.
  auto book = [] {
    Engine e = one_market();
    dep(e, 1, 30);
    dep(e, 2, 45);
    for (i64 a : {3, 4, 5}) dep(e, a, 300 + 100 * a);
    load(e, {1, 2, 3, 4, 5}, {10, 8, -6, -7, -5}, {100, 100, 100, 100, 100});
    mark(e, 0, 94);
    return e;
  };
  Engine batch = book(), calls = book();
  batch.liquidate(close_with(1'000'000));
  for (i64 a : {1, 2}) {
    const std::vector<i64> who{a};
    calls.liquidate(close_with(1'000'000), who);
  }
  for (i64 a : {i64{1}, i64{2}, i64{3}, i64{4}, i64{5}, kMM}) {
    EXPECT_EQ(batch.balance(a), calls.balance(a)) << a;
    EXPECT_EQ(position(batch, a), position(calls, a)) << a;
  }
  EXPECT_EQ(batch.insurance().balance(0), calls.insurance().balance(0));
}

}  // namespace
