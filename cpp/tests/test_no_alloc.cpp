// The hot paths of single-account operations allocate nothing after warm-up: a trade
// between accounts that already hold the market, one account's margin check, one ADL fill.
// Its own binary because it replaces the global operator new/delete with counting versions.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "deleverage/engine.hpp"
#include "test_helpers.hpp"

namespace {
std::atomic<long> g_allocations{0};

void* counted_alloc(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* counted_aligned_alloc(std::size_t n, std::align_val_t al) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = static_cast<std::size_t>(al);
  void* p = nullptr;
  if (posix_memalign(&p, a < sizeof(void*) ? sizeof(void*) : a, n == 0 ? 1 : n) != 0) throw std::bad_alloc();
  return p;
}
}  // namespace

// Every replaceable form, so that no allocation escapes the count (AccountHot is
// over-aligned: its vector uses the align_val_t forms).
void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t al) { return counted_aligned_alloc(n, al); }
void* operator new[](std::size_t n, std::align_val_t al) { return counted_aligned_alloc(n, al); }
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return counted_aligned_alloc(n, al);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return counted_aligned_alloc(n, al);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

using namespace deleverage;
using deleverage::testing::dep;
using deleverage::testing::mark;

namespace {

constexpr int kMarkets = 3;
constexpr i64 kPairs = 500;  // accounts 2i (long) and 2i+1 (short) in every market

// A book of 2 * kPairs accounts, each with a position of 100 + i lots in every market,
// longs even, shorts odd; marks set. One warm-up pass of every operation under test.
struct Book {
  Engine e{6, 1};
  std::vector<MarketId> markets;

  Book() {
    for (int k = 0; k < kMarkets; ++k) {
      MarketSpec s;
      s.symbol = "M" + std::to_string(k);
      s.qty_decimals = 3;
      s.price_decimals = 1;
      s.maintenance_rate = 5'000'000;
      s.initial_rate = 10'000'000;
      if (k == 1) {  // one tiered market, so tier lookups are on the measured path too
        s.tiers = {TierSpec{500'000'000, 1'000'000, 2'000'000, -1}, TierSpec{0, 2'000'000, 4'000'000, -1}};
      }
      markets.push_back(e.add_market(s));
    }
    std::vector<i64> ids, amounts, acc, sizes, prices;
    std::vector<MarketId> mk;
    for (i64 i = 0; i < 2 * kPairs; ++i) {
      ids.push_back(i);
      amounts.push_back(1'000'000'000'000);
    }
    e.deposit(ids, amounts);
    for (MarketId m : markets)
      for (i64 i = 0; i < kPairs; ++i) {
        for (i64 side : {0, 1}) {
          acc.push_back(2 * i + side);
          mk.push_back(m);
          sizes.push_back(side == 0 ? 100 + i : -(100 + i));
          prices.push_back(20'000);
        }
      }
    e.load_positions(acc, mk, sizes, prices);
    for (MarketId m : markets) mark(e, m, 19'500);
    run_ops();  // warm-up
  }

  // Every pair: a trade each way (sizes return to where they were), a margin check of both
  // accounts, and an ADL fill of 1 lot of the long against the short (the long shrinks).
  i64 run_ops() {
    i64 checksum = 0;
    for (i64 i = 0; i < kPairs; ++i) {
      const MarketId m = markets[static_cast<std::size_t>(i % kMarkets)];
      e.trade(2 * i, 2 * i + 1, m, 3, 19'510);
      checksum += e.account_margin(2 * i).equity;
      e.trade(2 * i + 1, 2 * i, m, 3, 19'490);
      checksum += e.account_margin(2 * i + 1).maintenance;
      e.adl_fill(2 * i, 2 * i + 1, m, 1, 19'400);
    }
    return checksum;
  }
};

}  // namespace

TEST(NoAllocation, CounterSeesAllocations) {
  // The counter works: a batch call builds vectors.
  Book b;
  const long before = g_allocations.load();
  const i64 buyers[2] = {0, 2}, sellers[2] = {1, 3}, sizes[2] = {1, 1}, prices[2] = {19'500, 19'500};
  const MarketId ms[2] = {b.markets[0], b.markets[0]};
  b.e.trades(buyers, sellers, ms, sizes, prices);
  EXPECT_GT(g_allocations.load() - before, 0);
}

TEST(NoAllocation, TradeMarginCheckAndAdlFillAfterWarmUp) {
  Book b;
  const long before = g_allocations.load();
  const i64 checksum = b.run_ops();
  const long allocations = g_allocations.load() - before;
  EXPECT_EQ(allocations, 0);
  EXPECT_NE(checksum, 0);
  b.e.check_invariants();
}

TEST(NoAllocation, EachOperationAlone) {
  Book b;
  const MarketId m = b.markets[1];
  long before = g_allocations.load();
  for (int k = 0; k < 100; ++k) b.e.trade(10, 11, m, 1, 19'600 + k);
  EXPECT_EQ(g_allocations.load() - before, 0) << "trade";
  before = g_allocations.load();
  i64 sum = 0;
  for (i64 a = 0; a < 2 * kPairs; ++a) sum += b.e.account_margin(a).initial;
  EXPECT_EQ(g_allocations.load() - before, 0) << "account_margin";
  EXPECT_GT(sum, 0);
  before = g_allocations.load();
  for (i64 i = 0; i < 50; ++i) b.e.adl_fill(2 * i + 1, 2 * i, m, 1, 19'700);  // shorts as the bankrupt side
  EXPECT_EQ(g_allocations.load() - before, 0) << "adl_fill";
  b.e.check_invariants();
}

TEST(NoAllocation, ClosingAndReopeningReusesTheSlot) {
  // A position closed to zero and opened again in the same market reuses its slot and its
  // place in the market's list: no allocation once the account has held the market.
  Book b;
  const MarketId m = b.markets[2];
  dep(b.e, 5000, 1'000'000'000'000);
  dep(b.e, 5001, 1'000'000'000'000);
  b.e.trade(5000, 5001, m, 7, 19'500);
  b.e.trade(5001, 5000, m, 7, 19'500);  // both flat again (warm-up of the new accounts)
  const long before = g_allocations.load();
  for (int k = 0; k < 50; ++k) {
    b.e.trade(5000, 5001, m, 7, 19'500);
    b.e.trade(5001, 5000, m, 7, 19'500);
  }
  EXPECT_EQ(g_allocations.load() - before, 0);
  EXPECT_EQ(b.e.balance(5000), 1'000'000'000'000);
  b.e.check_invariants();
}
