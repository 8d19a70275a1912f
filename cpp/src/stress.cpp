// Stress paths (stress.hpp): copies of the base engine stepped through mark paths, with
// per-step totals and per-account outcomes aggregated by an event sink as the waterfall runs.
#include "deleverage/stress.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <limits>
#include <unordered_map>

namespace deleverage {

namespace {

i64 add_checked(i64 a, i64 b, const char* what) {
  i64 r;
  if (__builtin_add_overflow(a, b, &r)) throw ArithmeticOverflow(std::string(what) + " overflows int64");
  return r;
}

// Per-account accumulators of one worker thread; merged at the end (sums and maxima, so
// the merge order does not matter).
struct AccountAcc {
  std::vector<i64> loss_total, loss_max, paths_hit, paths_liquidated, final_equity_min;
  explicit AccountAcc(std::size_t n)
      : loss_total(n, 0),
        loss_max(n, 0),
        paths_hit(n, 0),
        paths_liquidated(n, 0),
        final_equity_min(n, std::numeric_limits<i64>::max()) {}
};

constexpr std::uint8_t kLiquidated = 1, kListed = 2, kPaid = 4;

// Reads one path's events as the waterfall emits them: what each winner lost (ADL against
// the mark, haircuts) and who was liquidated, without keeping the events.
class PathSink final : public EventSink {
 public:
  PathSink(const Engine& e, const std::unordered_map<i64, std::uint32_t>& dense, std::vector<i64>& loss,
           std::vector<std::uint8_t>& flags, std::vector<std::uint32_t>& hit)
      : e_(e), dense_(dense), loss_(loss), flags_(flags), hit_(hit) {}

  i64 step_loss = 0;

  void add(i64, EventKind kind, i64 account, MarketId market, i64 counterparty, i64 size, i64 amount, i64, std::int32_t,
           i64) override {
    switch (kind) {
      case EventKind::AdlClose: {
        // what the winner would have received closing at the mark, less what it got
        const i64 loss = e_.value_at(market, -size, e_.mark(market)) - amount;
        paid(account, loss);
        note(counterparty, kLiquidated);  // the bankrupt side, even when no executor fill remains
        break;
      }
      case EventKind::Haircut:
        paid(account, -amount);
        break;
      case EventKind::LiquidationFill:
      case EventKind::PartialFill:
      case EventKind::BackstopFill:
        note(account, kLiquidated);
        break;
      default:
        break;
    }
  }

 private:
  std::uint32_t note(i64 id, std::uint8_t flag) {
    const auto it = dense_.find(id);
    if (it == dense_.end()) return AccountIndex::kNone;  // not an account of the base book
    const std::uint32_t a = it->second;
    if (!(flags_[a] & kListed)) hit_.push_back(a);
    flags_[a] |= kListed | flag;
    return a;
  }
  void paid(i64 id, i64 loss) {
    const std::uint32_t a = note(id, kPaid);
    if (a != AccountIndex::kNone) loss_[a] = add_checked(loss_[a], loss, "an account's stress loss");
    step_loss = add_checked(step_loss, loss, "a step's winner loss");
  }

  const Engine& e_;
  const std::unordered_map<i64, std::uint32_t>& dense_;
  std::vector<i64>& loss_;
  std::vector<std::uint8_t>& flags_;
  std::vector<std::uint32_t>& hit_;
};

void check_path_marks(std::span<const i64> marks, std::size_t paths, std::size_t steps, std::size_t markets) {
  if (steps == 0 && paths > 0) throw InvalidInput("steps: a stress path needs at least one step");
  if (markets == 0) throw InvalidInput("marks: the exchange has no market");
  if (marks.size() != paths * steps * markets)
    throw InvalidInput("marks: expected paths * steps * markets = " + std::to_string(paths * steps * markets) +
                       " ticks, got " + std::to_string(marks.size()));
  for (std::size_t i = 0; i < marks.size(); ++i) {
    if (marks[i] <= 0) {
      const std::size_t m = i % markets, s = (i / markets) % steps, p = i / (markets * steps);
      throw InvalidInput("marks[" + std::to_string(p) + "][" + std::to_string(s) + "][" + std::to_string(m) +
                         "]: a mark must be positive (got " + std::to_string(marks[i]) + ")");
    }
  }
}

// One step's totals into row `row` of the series (each must fit in int64).
void record_step(StressSeries& se, std::size_t row, const WaterfallTotals& t) {
  se.deficit[row] = to_i64_checked(t.deficit, "stress series: a step's deficit");
  se.fund_used[row] = to_i64_checked(t.fund_used, "stress series: a step's fund used");
  se.fund_fees[row] = to_i64_checked(t.fund_fees, "stress series: a step's fund fees");
  se.bad_debt[row] = to_i64_checked(t.bad_debt, "stress series: a step's bad debt");
  se.liquidated_accounts[row] = t.liquidated_accounts;
  se.partial_liquidations[row] = t.partial_liquidations;
  se.adl_notional[row] = to_i64_checked(t.adl_notional, "stress series: a step's adl notional");
  se.adl_closes[row] = t.adl_closes;
  se.haircut_total[row] = to_i64_checked(t.haircut_total, "stress series: a step's haircut total");
  se.accounts_touched[row] = t.accounts_touched;
}

// The workers' per-account outcomes merged (sums, maxima, minima).
StressAccounts merged_accounts(std::vector<AccountAcc>& accs) {
  StressAccounts oa{std::move(accs[0].loss_total), std::move(accs[0].loss_max), std::move(accs[0].paths_hit),
                    std::move(accs[0].paths_liquidated), std::move(accs[0].final_equity_min)};
  const std::size_t n = oa.loss_total.size();
  for (std::size_t w = 1; w < accs.size(); ++w) {
    for (std::size_t a = 0; a < n; ++a) {
      oa.loss_total[a] = add_checked(oa.loss_total[a], accs[w].loss_total[a], "an account's stress loss");
      oa.loss_max[a] = std::max(oa.loss_max[a], accs[w].loss_max[a]);
      oa.paths_hit[a] += accs[w].paths_hit[a];
      oa.paths_liquidated[a] += accs[w].paths_liquidated[a];
      oa.final_equity_min[a] = std::min(oa.final_equity_min[a], accs[w].final_equity_min[a]);
    }
  }
  return oa;
}

}  // namespace

StressRun run_stress(const Engine& base, const WaterfallConfig& config, std::span<const i64> marks, std::size_t paths,
                     std::size_t steps, int threads) {
  const std::size_t markets = base.market_count();
  check_path_marks(marks, paths, steps, markets);

  const std::vector<i64>& ids = base.account_ids();
  const std::size_t n = ids.size();
  std::unordered_map<i64, std::uint32_t> dense;
  dense.reserve(n * 2);
  for (std::size_t a = 0; a < n; ++a) dense.emplace(ids[a], static_cast<std::uint32_t>(a));

  StressRun out;
  const std::size_t pools = static_cast<std::size_t>(base.insurance().pool_count());
  for (std::size_t k = 0; k < pools; ++k) out.fund_start.push_back(base.insurance().balance(static_cast<int>(k)));
  StressSeries& se = out.series;
  se.paths = paths;
  se.steps = steps;
  se.pools = pools;
  const std::size_t rows = paths * steps;
  for (auto* v :
       {&se.deficit, &se.fund_used, &se.fund_fees, &se.bad_debt, &se.liquidated_accounts, &se.partial_liquidations,
        &se.adl_notional, &se.adl_closes, &se.haircut_total, &se.accounts_touched, &se.winner_loss})
    v->assign(rows, 0);
  se.fund_balance.assign(rows * pools, 0);

  const int hw = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const std::size_t workers =
      std::max<std::size_t>(1, std::min<std::size_t>(paths, static_cast<std::size_t>(threads > 0 ? threads : hw)));
  std::vector<MarketId> market_ids(markets);
  for (std::size_t m = 0; m < markets; ++m) market_ids[m] = static_cast<MarketId>(m);

  std::vector<AccountAcc> accs;
  accs.reserve(workers);
  for (std::size_t w = 0; w < workers; ++w) accs.emplace_back(n);
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::exception_ptr> errors(workers);

  auto worker = [&](std::size_t w) {
    AccountAcc& acc = accs[w];
    std::vector<i64> path_loss(n, 0);
    std::vector<std::uint8_t> path_flags(n, 0);
    std::vector<std::uint32_t> hit;  // accounts with a loss or liquidation in this path
    for (std::size_t p = next.fetch_add(1); p < paths && !failed.load(); p = next.fetch_add(1)) {
      Engine e(base);
      // several paths in flight share the cores: one thread per path's margin checks
      if (workers > 1) e.set_threads(1);
      PathSink sink(e, dense, path_loss, path_flags, hit);
      e.set_event_sink(&sink);
      for (std::size_t s = 0; s < steps; ++s) {
        const std::size_t row = p * steps + s;
        e.set_marks(market_ids, marks.subspan(row * markets, markets));
        sink.step_loss = 0;
        record_step(se, row, e.liquidate(config).totals);
        for (std::size_t k = 0; k < pools; ++k)
          se.fund_balance[row * pools + k] = e.insurance().balance(static_cast<int>(k));
        se.winner_loss[row] = sink.step_loss;
      }
      // end of the path: equity of every account, and the per-account outcomes
      const MarginReport fin = e.check_margin_values();
      for (std::size_t a = 0; a < n; ++a) acc.final_equity_min[a] = std::min(acc.final_equity_min[a], fin.equity[a]);
      for (std::uint32_t a : hit) {
        if (path_flags[a] & kPaid) {
          acc.loss_total[a] = add_checked(acc.loss_total[a], path_loss[a], "an account's stress loss");
          acc.loss_max[a] = std::max(acc.loss_max[a], path_loss[a]);
          ++acc.paths_hit[a];
        }
        if (path_flags[a] & kLiquidated) ++acc.paths_liquidated[a];
        path_loss[a] = 0;
        path_flags[a] = 0;
      }
      hit.clear();
    }
  };

  auto guarded = [&](std::size_t w) {
    try {
      worker(w);
    } catch (...) {
      errors[w] = std::current_exception();
      failed.store(true);
    }
  };
  std::vector<std::thread> pool;
  for (std::size_t w = 1; w < workers; ++w) pool.emplace_back(guarded, w);
  guarded(0);
  for (auto& th : pool) th.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);

  out.accounts = merged_accounts(accs);
  if (paths == 0) std::fill(out.accounts.final_equity_min.begin(), out.accounts.final_equity_min.end(), 0);
  return out;
}

}  // namespace deleverage
