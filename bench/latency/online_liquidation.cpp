// Latency of one per-account liquidation from C++ (Engine::liquidate(config, accounts)), on a
// large book, against a whole-book step on the same book in the same run:
//   fresh          one bankrupt account liquidated with ADL against <= 10 counterparties,
//                  the market's kept ADL queue fresh (p50 / p99 / max over --samples calls)
//   first_after_move  the same, right after that market's mark moved and the margin check
//                  ran (the call refreshes the queue: one scoring pass over one side)
//   step_after_move   the whole-book step (Engine::liquidate(config)) right after a mark
//                  move, with nothing to liquidate
//   check_margin   a full margin check (Engine::check_margin_values), for scale
// A victim account is made bankrupt before each timed call by an untimed trade at a bad price
// against the executor's account (the mark does not move), so the book itself has nothing
// to liquidate. Report: percentiles in ns and the ratios of the targets (issue 10).
//
//   deleverage_online_latency [--positions N] [--markets M] [--accounts A] [--samples S]
//                             [--moves R] [--threads T] [--victim-lots L] [--json PATH]
//
// Defaults: 1,000,000 positions in one market (one per account). The 10M/1M/100 book:
// --positions 10000000 --markets 100 --accounts 1000000 --victim-lots 300 (the winners' lots are
// spread over 10 markets there: fewer lots keep the ADL at <= 10 counterparties).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "cli.hpp"
#include "deleverage/engine.hpp"

using deleverage::Engine;
using deleverage::i64;
using deleverage::MarketId;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::size_t positions = 1'000'000;
  int markets = 1;
  std::size_t accounts = 0;  // 0: positions / (positions per account = 1 per market, up to 10)
  std::size_t samples = 2'000;
  std::size_t moves = 10;
  int threads = 0;
  i64 victim_lots = 700;  // 0.7 base unit: 4 to 8 winners of 100..199 lots on the one-market book
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  deleverage::bench::parse_flags(argc, argv, [&](const std::string& k, const std::string& v) {
    if (k == "--positions")
      a.positions = std::stoull(v);
    else if (k == "--markets")
      a.markets = std::stoi(v);
    else if (k == "--accounts")
      a.accounts = std::stoull(v);
    else if (k == "--samples")
      a.samples = std::stoull(v);
    else if (k == "--moves")
      a.moves = std::stoull(v);
    else if (k == "--threads")
      a.threads = std::stoi(v);
    else if (k == "--victim-lots")
      a.victim_lots = std::stoll(v);
    else if (k == "--json")
      a.json = v;
    else
      return false;
    return true;
  });
  if (a.markets < 1 || a.positions < 100 || a.samples < 1 || a.moves < 1) {
    std::fprintf(stderr, "bad arguments\n");
    std::exit(2);
  }
  if (a.accounts == 0) a.accounts = a.positions / static_cast<std::size_t>(std::min(a.markets, 10));
  if (a.positions % a.accounts != 0 || a.positions / a.accounts > static_cast<std::size_t>(a.markets)) {
    std::fprintf(stderr, "--positions must be a multiple of --accounts, at most one position per market each\n");
    std::exit(2);
  }
  return a;
}

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

constexpr i64 kMM = 1;          // the executor's account: takes the imbalance, huge collateral
constexpr i64 kPrice = 20'000;  // ticks (2000.0)

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  const std::size_t per_account = args.positions / args.accounts;
  Engine e(6, args.threads);
  for (int m = 0; m < args.markets; ++m) {
    deleverage::MarketSpec s;
    s.symbol = "M" + std::to_string(m);
    s.qty_decimals = 3;
    s.price_decimals = 1;
    s.maintenance_rate = 5'000'000;
    s.initial_rate = 10'000'000;
    e.add_market(s);
  }
  const auto t_build = Clock::now();
  {
    std::vector<i64> ids(args.accounts + 1), amounts(args.accounts + 1, static_cast<i64>(per_account) * 1'000'000'000);
    ids[0] = kMM;
    amounts[0] = i64{1} << 61;
    for (std::size_t a = 0; a < args.accounts; ++a) ids[a + 1] = static_cast<i64>(1'000 + a);
    e.deposit(ids, amounts);
    std::vector<i64> acc, size, price;
    std::vector<MarketId> mk;
    acc.reserve(args.positions);
    size.reserve(args.positions);
    price.reserve(args.positions);
    mk.reserve(args.positions);
    const std::size_t stride = static_cast<std::size_t>(args.markets) / per_account;
    for (std::size_t a = 0; a < args.accounts; ++a)
      for (std::size_t k = 0; k < per_account; ++k) {
        const i64 q = 100 + static_cast<i64>((a * 31 + k * 17) % 100);
        acc.push_back(static_cast<i64>(1'000 + a));
        mk.push_back(static_cast<MarketId>((a + k * stride) % static_cast<std::size_t>(args.markets)));
        size.push_back((a + k) % 2 == 0 ? q : -q);
        price.push_back(kPrice - 200 + static_cast<i64>((a * 13 + k) % 400));  // distinct scores
      }
    e.load_positions(acc, mk, size, price, kMM);
    std::vector<MarketId> all(static_cast<std::size_t>(args.markets));
    std::vector<i64> marks(all.size(), kPrice);
    for (std::size_t m = 0; m < all.size(); ++m) all[m] = static_cast<MarketId>(m);
    e.set_marks(all, marks);
    const std::size_t victims = args.samples + args.moves + 1;
    std::vector<i64> vid(victims), vamt(victims, 100'000'000);  // $100 each, flat
    for (std::size_t i = 0; i < victims; ++i) vid[i] = static_cast<i64>(2'000'000'000) + static_cast<i64>(i);
    e.deposit(vid, vamt);
  }
  const double build_s = seconds(t_build, Clock::now());
  (void)e.check_margin_values();

  deleverage::WaterfallConfig cfg;
  cfg.executor.account = kMM;
  cfg.executor.slippage_rate = 500'000;  // 50 bp: a deficit, so (with an empty fund) ADL takes the lots
  i64 next_victim = 2'000'000'000;
  std::size_t max_closes = 0, total_closes = 0;
  // One victim bought victim_lots at 20% over the mark: bankrupt; then liquidated on its own.
  auto liquidate_one = [&]() -> double {
    const i64 v = next_victim++;
    e.trade(v, kMM, 0, args.victim_lots, kPrice * 12 / 10);
    const std::vector<i64> who{v};
    const auto t0 = Clock::now();
    const deleverage::WaterfallResult r = e.liquidate(cfg, who);
    const auto t1 = Clock::now();
    if (r.totals.liquidated_accounts != 1 || r.totals.adl_closes < 1 || !r.skipped.empty()) {
      std::fprintf(stderr, "unexpected liquidation: %lld liquidated, %lld closes\n",
                   static_cast<long long>(r.totals.liquidated_accounts), static_cast<long long>(r.totals.adl_closes));
      std::exit(1);
    }
    max_closes = std::max(max_closes, static_cast<std::size_t>(r.totals.adl_closes));
    total_closes += static_cast<std::size_t>(r.totals.adl_closes);
    return seconds(t0, t1);
  };

  (void)liquidate_one();  // builds the queue (first use)
  std::vector<double> fresh;
  for (std::size_t i = 0; i < args.samples; ++i) fresh.push_back(liquidate_one());

  // Mark moves of market 0, alternating: the whole-book step, a full check, and the first
  // per-account liquidation after a move with the margin check already run.
  std::vector<double> first, step, check;
  const MarketId m0[1] = {0};
  for (std::size_t r = 0; r < args.moves; ++r) {
    const i64 px[1] = {kPrice + (r % 2 == 0 ? 1 : -1) * static_cast<i64>(1 + r)};
    e.set_marks(m0, px);
    auto t0 = Clock::now();
    const deleverage::WaterfallResult w = e.liquidate(cfg);
    step.push_back(seconds(t0, Clock::now()));
    if (w.totals.liquidated_accounts != 0) {
      std::fprintf(stderr, "the book had something to liquidate\n");
      return 1;
    }
    const i64 px2[1] = {px[0] + 1};
    e.set_marks(m0, px2);
    (void)e.check_margin(std::span<const MarketId>(m0, 1));  // the margin check already run
    first.push_back(liquidate_one());
    t0 = Clock::now();
    (void)e.check_margin_values();
    check.push_back(seconds(t0, Clock::now()));
  }
  e.check_invariants();

  const double f50 = percentile(fresh, 0.50), f99 = percentile(fresh, 0.99),
               fmax = *std::max_element(fresh.begin(), fresh.end());
  const double step_best = *std::min_element(step.begin(), step.end());
  const double first_best = *std::min_element(first.begin(), first.end());
  const double first_med = percentile(first, 0.5), step_med = percentile(step, 0.5);
  const double check_best = *std::min_element(check.begin(), check.end());
  std::printf(
      "# deleverage online liquidation (C++): %zu positions, %zu accounts, %d markets; %zu samples, %zu moves; "
      "book built in %.1f s; ADL closes per liquidation: max %zu, mean %.1f\n",
      args.positions, args.accounts, args.markets, args.samples, args.moves, build_s, max_closes,
      static_cast<double>(total_closes) / static_cast<double>(args.samples + args.moves + 1));
  std::printf("fresh queue, one account (us): p50 %.2f  p99 %.2f  max %.2f   target p99 <= 20 us: %s\n", f50 * 1e6,
              f99 * 1e6, fmax * 1e6, f99 <= 20e-6 ? "met" : "NOT met");
  std::printf("whole-book step after a move, nothing to liquidate (ms): best %.3f  median %.3f\n", step_best * 1e3,
              step_med * 1e3);
  std::printf("full margin check (ms): best %.3f\n", check_best * 1e3);
  std::printf(
      "first per-account liquidation after a move (ms): best %.3f  median %.3f  = %.3f x the step (best/best); "
      "target <= 0.6: %s\n",
      first_best * 1e3, first_med * 1e3, first_best / step_best, first_best / step_best <= 0.6 ? "met" : "NOT met");
  std::printf("step over one fresh per-account liquidation (best step / p50): %.0f x\n", step_best / f50);
  if (!args.json.empty()) {
    std::ofstream out(args.json);
    out << "{\"positions\": " << args.positions << ", \"accounts\": " << args.accounts
        << ", \"markets\": " << args.markets << ", \"samples\": " << args.samples << ", \"moves\": " << args.moves
        << ", \"max_adl_closes\": " << max_closes << ", \"fresh_p50_s\": " << f50 << ", \"fresh_p99_s\": " << f99
        << ", \"fresh_max_s\": " << fmax << ", \"first_after_move_best_s\": " << first_best
        << ", \"first_after_move_median_s\": " << first_med << ", \"step_after_move_best_s\": " << step_best
        << ", \"step_after_move_median_s\": " << step_med << ", \"check_margin_best_s\": " << check_best << "}\n";
  }
  return 0;
}
