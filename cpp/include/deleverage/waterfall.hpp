// Configuration and results of the loss waterfall (Engine::liquidate) and of the ADL
// ranking indicator (Engine::adl_ranking). The procedure is specified in docs/waterfall.md.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "deleverage/allocate.hpp"
#include "deleverage/fixed_point.hpp"
#include "deleverage/market.hpp"
#include "deleverage/policy.hpp"

namespace deleverage {

enum class ExecutorKind : std::uint8_t {
  MarketClose = 0,  // a liquidity account takes the position at mark moved against the trader
  Backstop = 1,     // a backstop vault takes the position over at the bankruptcy price
};

struct ExecutorSpec {
  ExecutorKind kind = ExecutorKind::MarketClose;
  i64 account = 0;        // the counterparty (MarketClose) or the vault (Backstop)
  i64 slippage_rate = 0;  // 1e-8 units of the mark (1 bp = 10'000)
  i64 impact_rate = 0;    // extra slippage, 1e-8 units per impact_depth of notional
  i64 impact_depth = 0;   // money units; 0 disables the impact term
  bool partial = false;   // close only enough to restore maintenance margin when possible
};

enum class WaterfallMode : std::uint8_t { Close = 0, Haircut = 1 };
// Severity: -1 = deficit-matching (the last resort takes only what the fund cannot pay).
inline constexpr i64 kThetaDeficit = -1;
enum class Ranking : std::uint8_t { BitMEX = 0, Binance = 1, Hyperliquid = 2 };
enum class AdlPrice : std::uint8_t { Bankruptcy = 0, Mark = 1, PreviousMark = 2 };

// What Engine::liquidate runs: who closes the positions, then the last resort (docs/waterfall.md).
// Where a bankrupt account's negative equity lands (docs/semantics.md, "Bankruptcy values"):
// Loss: on its positions in proportion to their losses at the mark (positions in profit or
// flat take none); Maintenance: by maintenance share (dYdX v4). Non-negative equity, and
// negative equity with no position at a loss, are split by maintenance share under both.
enum class DeficitSplit : std::uint8_t { Loss = 0, Maintenance = 1 };

// Each position's share of the account equity `equity` (money units, summing to it exactly):
// the split's weights, floor(equity * w_i / sum w), the remainder to the last weighted one.
// loss_i = max(0, -u_i) and mm_i are money units per position (same order);
// mark_value_i breaks the tie when every maintenance is 0.
std::vector<i128> split_equity(i128 equity, DeficitSplit split, std::span<const i128> loss, std::span<const i128> mm,
                               std::span<const i128> mark_value);

struct WaterfallConfig {
  ExecutorSpec executor;
  WaterfallMode mode = WaterfallMode::Close;
  Policy policy = Policy::Queue;
  Ranking ranking = Ranking::BitMEX;
  AdlPrice adl_price = AdlPrice::Bankruptcy;
  // Severity theta in 1e-8 units (0..kRateScale): the share of each position's deficit (after
  // surplus offsets) that goes to the last resort even when the fund could pay it;
  // kThetaDeficit = only what the fund cannot pay.
  i64 theta = kThetaDeficit;
  // capped_pro_rata / risk_aware: the largest fraction (1e-8 units) of its capacity a winner
  // may lose (lots of its position in close mode, profit in haircut mode).
  i64 cap = kRateScale;
  // min_max_lots: the lot (lots of the market in close mode, money units in haircut mode).
  i64 lot = 1;
  RiskFunction g{};        // risk_aware
  std::uint64_t seed = 0;  // random_walk
  DeficitSplit deficit_split = DeficitSplit::Loss;
};

enum class EventKind : std::uint8_t {
  LiquidationFill = 0,   // executor fill: account closes `size` lots, receives `amount`
  PartialFill = 1,       // the same, for a partial liquidation
  BackstopFill = 2,      // the vault takes the position at the bankruptcy value
  FundPayment = 3,       // the fund pays `amount` to the account (a deficit)
  LiquidationFee = 4,    // the account pays `amount` to the fund (from its surplus)
  AdlClose = 5,          // `account` (a winner) closes `size` lots against `counterparty`
  Haircut = 6,           // `account` (a winner) pays `-amount` to `counterparty`
  BadDebt = 7,           // deficit nobody could cover (all capacity exhausted)
  SocializedCredit = 8,  // the account receives `amount` raised by the round's haircuts
};

// Receives the movements of waterfall steps one by one instead of the column log (see
// Engine::set_event_sink): a long stress path aggregates them as they happen rather than
// holding a step's whole log.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void add(i64 step, EventKind kind, i64 account, MarketId market, i64 counterparty, i64 size, i64 amount,
                   i64 price, std::int32_t pool, i64 exec_price) = 0;
};

// Column-wise log of every movement in one waterfall step (empty when a sink takes them).
struct WaterfallEvents {
  EventSink* sink = nullptr;

  std::vector<i64> step;
  std::vector<std::uint8_t> kind;
  std::vector<i64> account;
  std::vector<MarketId> market;    // -1 when the movement is not tied to a market
  std::vector<i64> counterparty;   // the other party; 0 for the fund
  std::vector<i64> size;           // lots: change of `account`'s position
  std::vector<i64> amount;         // money units: cash to `account` (signed)
  std::vector<i64> price;          // ticks of the fill (rounded), 0 when not a fill
  std::vector<std::int32_t> pool;  // insurance pool, -1 when none
  // ticks: for fills their price; for AdlClose the executor's price for the bankrupt
  // position (what those lots would have filled at without ADL); 0 otherwise
  std::vector<i64> exec_price;

  void add(i64 st, EventKind k, i64 acc, MarketId m, i64 cp, i64 sz, i64 amt, i64 px, std::int32_t pl, i64 xpx = 0) {
    if (sink != nullptr) {
      sink->add(st, k, acc, m, cp, sz, amt, px, pl, xpx);
      return;
    }
    step.push_back(st);
    kind.push_back(static_cast<std::uint8_t>(k));
    account.push_back(acc);
    market.push_back(m);
    counterparty.push_back(cp);
    size.push_back(sz);
    amount.push_back(amt);
    price.push_back(px);
    pool.push_back(pl);
    exec_price.push_back(xpx);
  }
  // Room for n more rows in every column (nothing when a sink takes the events).
  void reserve_more(std::size_t n) {
    if (sink != nullptr) return;
    const std::size_t total = step.size() + n;
    step.reserve(total), kind.reserve(total), account.reserve(total), market.reserve(total),
        counterparty.reserve(total);
    size.reserve(total), amount.reserve(total), price.reserve(total), pool.reserve(total), exec_price.reserve(total);
  }
  // Number of events (rows).
  std::size_t size_() const { return step.size(); }
};

// Money totals are sums over the step's positions and accounts: kept in 128 bits, since
// several values each within the limits may add up past int64 (docs/waterfall.md).
struct WaterfallTotals {
  i64 step = 0;
  i64 liquidated_accounts = 0;  // accounts the step closed positions of
  i64 partial_liquidations = 0;
  i128 deficit = 0;          // total deficit before the fund (money)
  i128 fund_used = 0;        // paid by the insurance fund (money)
  i128 fund_fees = 0;        // liquidation fees received by the fund (money)
  i128 adl_notional = 0;     // |value| of ADL closes (money)
  i64 adl_closes = 0;        // number of counterparty closes
  i128 haircut_total = 0;    // taken from winners in haircut mode (money)
  i64 accounts_touched = 0;  // distinct winners that were deleveraged or haircut
  i128 bad_debt = 0;         // left uncovered (money); 0 unless every winner is exhausted
  // What the last resort had to raise under deficit matching: per position, the deficit the
  // fund could not have paid (money). With a fixed theta the last resort may take more.
  i128 last_resort_needed = 0;
  i128 last_resort_planned = 0;  // what the plan sent to the last resort (money)
};

struct WaterfallResult {
  WaterfallEvents events;
  WaterfallTotals totals;
  // Per-account calls: the given accounts that were not liquidated (flat, the executor's, or
  // not liquidatable when their turn came), in the order given.
  std::vector<i64> skipped;
};

// When the kept ADL queues are refreshed (Engine::set_adl_refresh).
enum class AdlRefresh : std::uint8_t { Exact = 0, Interval = 1 };

// One account's place in its side's ADL queue (Engine::adl_rank).
struct AdlRank {
  std::int8_t side = 0;   // +1 long, -1 short
  i64 score = 0;          // 1e-9 units, as the queue holds it
  i64 rank = 0;           // 1 = first in its side's queue
  i64 side_count = 0;     // positions on that side
  std::int8_t light = 0;  // 1..5: 5 = top 20% of its side
};

// What a kept ADL queue holds and how much it has been used since its last refresh (a
// diagnostic for operators and for the tests that bound the work of a step).
struct AdlQueueStats {
  bool built = false;
  i64 entries = 0;  // in the heap and the unsorted reserve, superseded ones included
  i64 parked = 0;   // set aside as liquidatable (not winners until they change or marks move)
  i64 aside = 0;    // set aside by haircuts (nothing to take)
  i64 pops = 0;     // entries taken off the heap since the refresh
};

// One row per open position of a market: the ADL indicator.
struct AdlRankingReport {
  std::vector<i64> account;
  std::vector<std::int8_t> side;   // +1 long, -1 short
  std::vector<i64> size;           // lots
  std::vector<i64> score;          // ranking score in 1e-9 units (higher = deleveraged first)
  std::vector<i64> rank;           // 1 = first in its side's queue
  std::vector<std::int8_t> light;  // 1..5: 5 = top 20% of its side
  std::vector<i64> expected_loss;  // money: loss vs mark if the largest current deficit were deleveraged now
};

// Ranking scores are integers in units of 1e-9.
inline constexpr i64 kScoreScale = 1'000'000'000;

}  // namespace deleverage
