// Engine::liquidate and the round loop: detection, worst first, the per-account routine,
// the round's shared ADL and haircuts, then the cascade.
#include "deleverage/detail/parallel.hpp"
#include "waterfall_run.hpp"

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
  result_.totals.step = e_.step();
  result_.events.sink = e_.event_sink();
  exec_account_ = e_.account_index_or_throw(cfg_.executor.account, "executor.account", 0);
  promised_.assign(static_cast<std::size_t>(e_.fund().pool_count()), 0);
  matching_pool_.resize(promised_.size());
  for (std::size_t p = 0; p < matching_pool_.size(); ++p) matching_pool_[p] = e_.fund().available(static_cast<int>(p));
  // grows with the accounts only: a per-account call does not pay for the whole book
  if (e_.waterfall_flags().size() < e_.book().ids().size()) e_.waterfall_flags().resize(e_.book().ids().size(), 0);
  e_.ensure_adl_queues();           // references to the queues stay valid through the step
  e_.hold_notes(0, exec_account_);  // the executor is never a winner: re-scored once, at the end
}

WaterfallResult WaterfallRun::finish() {
  // A queue haircut sets aside the winners whose capacity this step took; the next step may
  // take from them again, so they are noted as changed (re-scored, back in the haircut order).
  for (const auto& taken : haircut_taken_) e_.note_changed(static_cast<std::uint32_t>(taken.first >> 32));
  e_.release_notes(0);
  return std::move(result_);
}

WaterfallResult WaterfallRun::run() {
  setup();
  const std::size_t n = e_.book().ids().size();
  if (!have_start_margins_) {
    start_balance_.resize(n);
    start_equity_.resize(n);
    start_maintenance_.resize(n);
    detail::parallel_for(n, e_.threads(), 16384, [&](std::size_t b, std::size_t end) {
      for (std::size_t a = b; a < end; ++a) {
        const AccountMargin am = margin(a);
        start_balance_[a] = e_.book().hot()[a].balance;
        start_equity_[a] = am.equity;
        start_maintenance_[a] = am.maintenance;
      }
    });
  }
  // Detection, from the start-of-step margins: accounts with positions below maintenance (a
  // flat account's old debt is not this step's to settle), worst first.
  std::vector<Candidate> work;
  for (std::uint32_t a = 0; a < n; ++a)  // the margins first: they are streamed, the account lines are not
    if (start_equity_[a] < start_maintenance_[a] && e_.book().hot()[a].count > 0 && a != exec_account_)
      work.push_back(Candidate{a, start_equity_[a], start_maintenance_[a], e_.book().ids()[a]});
  std::sort(work.begin(), work.end(), worse);
  // A liquidation writes a fill per position and, when ADL runs, a few closes per position:
  // room for that up front spares copying a growing event table (a few % of a crash step).
  // Capacity never written costs address space only.
  result_.events.reserve_more(std::min<std::size_t>(work.size() * kEventsPerLiquidation, kMaxEventsReserved));
  std::vector<std::uint32_t> order;
  order.reserve(work.size());
  for (const Candidate& c : work) order.push_back(c.a);
  if (!per_account_rounds()) {
    run_rounds(std::move(order));
  } else {
    for (std::uint32_t a : order)  // the per-account routine, one account at a time
      if (liquidatable_now(a)) run_rounds({a});
  }
  return finish();
}

WaterfallResult WaterfallRun::run(std::span<const std::uint32_t> accounts) {
  setup();
  std::vector<std::uint32_t> round;
  for (std::uint32_t a : accounts) {
    // a round policy's accounts are all checked before its round, the others at their turn
    if (a == exec_account_ || !liquidatable_now(a) || (!per_account_rounds() && flag(a, kExcluded))) {
      result_.skipped.push_back(e_.book().ids()[a]);
    } else if (per_account_rounds()) {
      run_rounds({a});
    } else {
      set_flag(a, kExcluded);  // also marks a repeated id
      round.push_back(a);
    }
  }
  for (std::uint32_t a : round) clear_flag(a, kExcluded);
  if (!round.empty()) run_rounds(std::move(round));
  return finish();
}

void WaterfallRun::run_rounds(std::vector<std::uint32_t> checked) {
  round_key_ = checked.empty() ? 0 : e_.book().ids()[checked.front()];
  random_walks_ = 0;
  bool first_round = true;
  while (!checked.empty()) {
    std::sort(adl_log_.begin(), adl_log_.end());  // settle_flat looks winners up by account
    std::vector<std::uint32_t> work;
    if (first_round) {
      work = std::move(checked);  // in the caller's order (worst first for the batch step)
    } else {
      std::vector<Candidate> next;
      for (std::uint32_t a : checked) {
        if (a == exec_account_) continue;
        if (e_.book().hot()[a].count == 0) {
          if (e_.book().hot()[a].balance < 0 && !flag(a, kSettledFlat)) {  // a winner ADL left flat in debt
            set_flag(a, kSettledFlat);
            settle_flat(a);
          }
          continue;
        }
        const AccountMargin am = margin(a);
        if (am.liquidatable) next.push_back(Candidate{a, am.equity, am.maintenance, e_.book().ids()[a]});
      }
      std::sort(next.begin(), next.end(), worse);
      for (const Candidate& c : next) work.push_back(c.a);
    }
    first_round = false;
    // the round's accounts are never winners while it runs
    for (std::uint32_t a : work) set_flag(a, kExcluded);
    adl_log_.clear();
    for (std::uint32_t a : work) liquidate_account(a);
    run_round_adl();
    resolve_pending_haircuts();
    for (std::uint32_t a : work) clear_flag(a, kExcluded);
    // a cascade: winners the round deleveraged or haircut may now be liquidatable themselves
    checked.clear();
    std::sort(touched_list_.begin(), touched_list_.end());
    for (std::uint32_t a : touched_list_) {
      clear_flag(a, kWinnerTouched);
      checked.push_back(a);
    }
    touched_list_.clear();
    ++rounds_;
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
