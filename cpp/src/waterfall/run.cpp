// Engine::liquidate and the round loop: detection, worst first, the per-account routine,
// the round's shared ADL and haircuts, then the cascade.
#include "waterfall_run.hpp"

#include "deleverage/detail/parallel.hpp"

namespace deleverage {

namespace {
constexpr std::size_t kEventsPerLiquidation = 24;
constexpr std::size_t kMaxEventsReserved = std::size_t{1} << 22;
// worst margin first: negative equity deepest first, then maintenance/equity descending
struct Candidate {
  std::uint32_t a;
  i64 equity, maintenance, id;
};
bool worse(const Candidate& x, const Candidate& y) {
  const bool xb = x.equity <= 0, yb = y.equity <= 0;
  if (xb != yb) return xb;
  if (xb) return x.equity != y.equity ? x.equity < y.equity : x.id < y.id;
  const i128 l = static_cast<i128>(x.maintenance) * y.equity, r = static_cast<i128>(y.maintenance) * x.equity;
  return l != r ? l > r : x.id < y.id;
}
}  // namespace

void WaterfallRun::setup() {
  Engine& e = s_.e;
  s_.result.totals.step = e.step();
  s_.result.events.sink = e.event_sink();
  s_.exec_account = e.account_index_or_throw(s_.cfg.executor.account, "executor.account", 0);
  settlement_.start();
  // grows with the accounts only: a per-account call does not pay for the whole book
  if (e.waterfall_flags().size() < e.book().ids().size()) e.waterfall_flags().resize(e.book().ids().size(), 0);
  e.ensure_adl_queues();             // references to the queues stay valid through the step
  e.hold_notes(0, s_.exec_account);  // the executor is never a winner: re-scored once, at the end
}

WaterfallResult WaterfallRun::finish() {
  haircuts_.note_haircut_winners();
  s_.e.release_notes(0);
  return std::move(s_.result);
}

void WaterfallRun::compute_start_margins() {
  const std::size_t n = s_.e.book().ids().size();
  start_balance_.resize(n);
  start_equity_.resize(n);
  start_maintenance_.resize(n);
  detail::parallel_for(n, s_.e.threads(), 16384, [&](std::size_t b, std::size_t end) {
    for (std::size_t a = b; a < end; ++a) {
      const AccountMargin am = s_.margin(static_cast<std::uint32_t>(a));
      start_balance_[a] = s_.e.book().hot()[a].balance;
      start_equity_[a] = am.equity;
      start_maintenance_[a] = am.maintenance;
    }
  });
}

WaterfallResult WaterfallRun::run() {
  setup();
  s_.whole_book = true;
  const detail::Book& book = s_.e.book();
  const std::size_t n = book.ids().size();
  if (!have_start_margins_) compute_start_margins();
  // Detection, from the start-of-step margins: accounts with positions below maintenance (a
  // flat account's old debt is not this step's to settle), worst first.
  std::vector<Candidate> work;
  for (std::uint32_t a = 0; a < n; ++a)  // the margins first: they are streamed, the account lines are not
    if (start_equity_[a] < start_maintenance_[a] && book.hot()[a].count > 0 && a != s_.exec_account)
      work.push_back(Candidate{a, start_equity_[a], start_maintenance_[a], book.ids()[a]});
  std::sort(work.begin(), work.end(), worse);
  // A liquidation writes a fill per position and, when ADL runs, a few closes per position:
  // room for that up front spares copying a growing event table (a few % of a crash step).
  // Capacity never written costs address space only.
  s_.result.events.reserve_more(std::min<std::size_t>(work.size() * kEventsPerLiquidation, kMaxEventsReserved));
  std::vector<std::uint32_t> order;
  order.reserve(work.size());
  for (const Candidate& c : work) order.push_back(c.a);
  if (!per_account_rounds()) {
    run_rounds(std::move(order));
  } else {
    for (std::uint32_t a : order)  // the per-account routine, one account at a time
      if (s_.liquidatable_now(a)) run_rounds({a});
  }
  return finish();
}

WaterfallResult WaterfallRun::run(std::span<const std::uint32_t> accounts) {
  setup();
  std::vector<std::uint32_t> round;
  for (std::uint32_t a : accounts) {
    // a round policy's accounts are all checked before its round, the others at their turn
    if (a == s_.exec_account || !s_.liquidatable_now(a) ||
        (!per_account_rounds() && s_.flag(a, StepState::kExcluded))) {
      s_.result.skipped.push_back(s_.e.book().ids()[a]);
    } else if (per_account_rounds()) {
      run_rounds({a});
    } else {
      s_.set_flag(a, StepState::kExcluded);  // also marks a repeated id
      round.push_back(a);
    }
  }
  for (std::uint32_t a : round) s_.clear_flag(a, StepState::kExcluded);
  if (!round.empty()) run_rounds(std::move(round));
  return finish();
}

void WaterfallRun::run_rounds(std::vector<std::uint32_t> checked) {
  const detail::Book& book = s_.e.book();
  allocation_.start_liquidation(checked.empty() ? 0 : book.ids()[checked.front()]);
  bool first_round = true;
  while (!checked.empty()) {
    std::sort(s_.adl_log.begin(), s_.adl_log.end());  // settle_flat looks winners up by account
    std::vector<std::uint32_t> work;
    if (first_round) {
      work = std::move(checked);  // in the caller's order (worst first for the batch step)
    } else {
      std::vector<Candidate> next;
      for (std::uint32_t a : checked) {
        if (a == s_.exec_account) continue;
        if (book.hot()[a].count == 0) {
          if (book.hot()[a].balance < 0 && !s_.flag(a, StepState::kSettledFlat)) {  // a winner ADL left flat in debt
            s_.set_flag(a, StepState::kSettledFlat);
            settlement_.settle_flat(a);
          }
          continue;
        }
        const AccountMargin am = s_.margin(a);
        if (am.liquidatable) next.push_back(Candidate{a, am.equity, am.maintenance, book.ids()[a]});
      }
      std::sort(next.begin(), next.end(), worse);
      for (const Candidate& c : next) work.push_back(c.a);
    }
    first_round = false;
    // the round's accounts are never winners while it runs
    for (std::uint32_t a : work) s_.set_flag(a, StepState::kExcluded);
    s_.adl_log.clear();
    for (std::uint32_t a : work) settlement_.liquidate(a);
    adl_.run_round();
    settlement_.settle_deferred();
    haircuts_.resolve_round();
    for (std::uint32_t a : work) s_.clear_flag(a, StepState::kExcluded);
    // a cascade: winners the round deleveraged or haircut may now be liquidatable themselves
    checked = s_.take_winners_touched();
  }
}

namespace {
void validate_config(const WaterfallConfig& config) {
  if (config.executor.slippage_rate < 0 || config.executor.slippage_rate > kRateScale)
    throw InvalidInput("executor.slippage must be between 0 and 1");
  if (config.executor.impact_rate < 0 || config.executor.impact_depth < 0)
    throw InvalidInput("executor.impact must not be negative");
  if (config.theta != kThetaDeficit && (config.theta < 0 || config.theta > kRateScale))
    throw InvalidInput("theta must be 'deficit' or between 0 and 1 (got " + std::to_string(config.theta) + " x 1e-8)");
  if (config.cap < 0 || config.cap > kRateScale)
    throw InvalidInput("cap must be between 0 and 1 (got " + std::to_string(config.cap) + " x 1e-8)");
  if (config.lot <= 0) throw InvalidInput("lot must be positive (got " + std::to_string(config.lot) + ")");
  if (!(config.g.param >= 0 && config.g.param < 1e300))
    throw InvalidInput("g: the parameter must be a finite number >= 0");
  if (config.mode == WaterfallMode::Close && config.policy == Policy::FundingIndex)
    throw InvalidInput("policy 'funding_index' is a haircut policy: use mode='haircut'");
}
}  // namespace

WaterfallResult Engine::liquidate(const WaterfallConfig& config) { return run_waterfall(config, nullptr); }

WaterfallResult Engine::liquidate(const WaterfallConfig& config, std::span<const i64> accounts) {
  return run_waterfall(config, &accounts);
}

WaterfallResult Engine::run_waterfall(const WaterfallConfig& config, const std::span<const i64>* accounts) {
  validate_config(config);
  account_index_or_throw(config.executor.account, "executor.account", 0);
  std::vector<std::uint32_t> given;
  if (accounts != nullptr) {
    given.reserve(accounts->size());
    for (std::size_t i = 0; i < accounts->size(); ++i)
      given.push_back(account_index_or_throw((*accounts)[i], "accounts", i));
  }
  require_marks_for_open_positions();
  StepMargins start;
  bool have_margins = false;
  if (accounts == nullptr)
    have_margins = revalue_for_step(start);
  else  // only the moved markets (nothing if the margin check already ran)
    revalue_moved_markets(std::vector<std::uint8_t>(markets_.size(), 0), nullptr, nullptr, /*collect=*/false);
  // a step that throws is undone: the book through its undo log, the fund through its save point
  const std::size_t book_before = book_.undo_log().mark();
  const InsuranceFund::Mark fund_before = insurance_.save_point();
  ++step_;
  insurance_.open_step(step_);
  // no last resort: closes go through the executor as in haircut mode, and no winner pays
  WaterfallConfig cfg = config;
  if (cfg.policy == Policy::None) cfg.mode = WaterfallMode::Haircut;
  WaterfallRun run(*this, cfg);
  if (have_margins) run.use_start_margins(std::move(start));
  try {
    WaterfallResult r = accounts == nullptr ? run.run() : run.run(given);
    run.require_representable();  // e.g. an executor whose equity the step would push past int64
    r.events.sink = nullptr;      // the result does not hand out the engine's sink
    insurance_.close_step(step_);
    book_.undo_log().forget(book_before);
    book_.compact_if_wasteful();
    return r;
  } catch (...) {
    roll_back(book_before);
    drop_adl_queues();  // what the failed call popped or pushed is not worth tracking: rebuild
    --step_;
    insurance_.restore(fund_before);
    throw;
  }
}

}  // namespace deleverage
