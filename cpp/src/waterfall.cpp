// The loss waterfall: executor fills, the insurance fund, and the last resort (ADL close or
// haircut). docs/waterfall.md is the specification; comments here say why, not what.
#include <algorithm>
#include <limits>
#include <unordered_map>

#include "deleverage/allocation.hpp"
#include "deleverage/detail/parallel.hpp"
#include "deleverage/engine.hpp"

namespace deleverage {

namespace {
i64 abs64(i64 v) { return v < 0 ? -v : v; }
i64 clamp_i64(i128 v) {
  if (v > std::numeric_limits<i64>::max()) return std::numeric_limits<i64>::max();
  if (v < std::numeric_limits<i64>::min() + 1) return std::numeric_limits<i64>::min() + 1;
  return static_cast<i64>(v);
}
// Leverage is capped so that an account with no equity left still ranks finitely.
constexpr i128 kMaxLeverageScaled = i128{1'000'000} * kScoreScale;
// The same cap for the risk-aware policy's leverage, in the allocation kernel's 1e-8 units.
constexpr i64 kMaxAllocLeverage = i64{1'000'000} * kAllocRateScale;

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

AllocPolicy kernel_policy(LastResortPolicy p) {
  switch (p) {
    case LastResortPolicy::CappedProRata: return AllocPolicy::CappedProRata;
    case LastResortPolicy::RiskAware: return AllocPolicy::RiskAware;
    case LastResortPolicy::MinMaxLots: return AllocPolicy::MinMaxLots;
    case LastResortPolicy::RandomWalk: return AllocPolicy::RandomWalk;
    default: return AllocPolicy::ProRata;
  }
}

struct QueueEntry {
  i64 score;
  i64 id;
  std::uint32_t account;
};
// max-heap by score, ties to the smaller account id
struct QueueOrder {
  bool operator()(const QueueEntry& x, const QueueEntry& y) const {
    return x.score < y.score || (x.score == y.score && x.id > y.id);
  }
};
}  // namespace

// ------------------------------------------------------------------ insurance plumbing

int Engine::give_market_own_pool(MarketId m) {
  MarketState& mk = const_cast<MarketState&>(market_or_throw(m, "market", 0));
  if (mk.pool != 0) return mk.pool;
  mk.pool = insurance_.add_pool();
  return mk.pool;
}

int Engine::market_pool(MarketId m) const { return market_or_throw(m, "market", 0).pool; }

i64 Engine::previous_mark(MarketId m) const { return market_or_throw(m, "market", 0).previous_mark; }

void Engine::insurance_deposit(i64 amount, int pool) {
  if (amount < 0) throw InvalidInput("amount: an insurance deposit must not be negative (got " + std::to_string(amount) + ")");
  if (pool < 0 || pool >= insurance_.pool_count()) throw UnknownId("pool: unknown insurance pool " + std::to_string(pool));
  insurance_.move(step_, pool, -1, 0, amount, LedgerReason::Deposit);
  flows_.insurance_deposits += amount;
}

// ------------------------------------------------------------------ prices and scores

i64 Engine::executor_price(const MarketState& mk, i64 size, const ExecutorSpec& ex) const {
  i128 rate = ex.slippage_rate;
  if (ex.impact_depth > 0) {
    const i128 notional = div_s_.floor(value_v(mk, abs64(size), mk.mark));
    rate += static_cast<i128>(ex.impact_rate) * notional / ex.impact_depth;
  }
  rate = std::min<i128>(rate, kRateScale);
  // against the trader being closed: a long sells lower (floor), a short buys higher (ceil)
  if (size > 0) return std::max<i64>(1, static_cast<i64>(floor_div(static_cast<i128>(mk.mark) * (kRateScale - rate), kRateScale)));
  return to_i64_checked(ceil_div(static_cast<i128>(mk.mark) * (kRateScale + rate), kRateScale), "executor price");
}

i64 Engine::adl_score(std::uint32_t a, std::uint32_t slot, Ranking ranking) const {
  const AccountMargin am = margin_from_sums(acc_[a].balance, acc_[a].cache);
  return adl_score(slot, ranking, acc_[a].balance, am.equity, am.maintenance);
}

// The score of one position given its account's balance, equity and maintenance (money).
// Integer arithmetic in units of kScoreScale; see docs/waterfall.md section 7.
i64 Engine::adl_score(std::uint32_t slot, Ranking ranking, i64 balance, i64 equity, i64 maintenance) const {
  const MarketState& mk = markets_[static_cast<std::size_t>(pos_market_[slot])];
  const i64 q = pos_size_[slot], E = pos_entry_[slot];
  const i128 value = static_cast<i128>(q) * mk.mark * mk.pow10k;
  const i128 mark_value = scale_s_ == 1 ? value : div_s_.floor(value);
  const i128 u = mark_value - E;  // floor(u_V / S): E * S is a multiple of S
  const i128 notional = mark_value < 0 ? -mark_value : mark_value;
  const i128 abs_entry = std::max<i128>(1, abs64(E));
  switch (ranking) {
    case Ranking::BitMEX: {
      // pnl% x leverage when in profit, pnl% / leverage otherwise; leverage = notional over
      // the position's share of the account equity (its maintenance share)
      const i128 pnl = floor_div_fast(u * kScoreScale, abs_entry);
      i128 share = equity;
      if (maintenance > 0) {
        const i128 mm_i = div_sr_.ceil(contribution(mk, q, 0, mk.mark).mm);
        share = trunc_div(static_cast<i128>(equity) * mm_i, maintenance);
      }
      i128 lev = share > 0 ? std::min(kMaxLeverageScaled, trunc_div(notional * kScoreScale, share)) : kMaxLeverageScaled;
      lev = std::max<i128>(lev, 1);
      return clamp_i64(pnl > 0 ? trunc_div(pnl * lev, kScoreScale) : trunc_div(pnl * kScoreScale, lev));
    }
    case Ranking::Binance: {
      // LeveragePnl = max(0, upnl) / max(1, wallet balance) x maintenance / (wallet + upnl)
      const i128 one_quote = pow10_i64(money_decimals_);
      const i128 pnl = trunc_div(std::max<i128>(0, u) * kScoreScale, std::max<i128>(one_quote, balance));
      const i128 ratio = equity > 0 ? trunc_div(static_cast<i128>(maintenance) * kScoreScale, equity) : 0;
      return clamp_i64(trunc_div(std::min<i128>(pnl, kMaxLeverageScaled) * std::min<i128>(ratio, kMaxLeverageScaled), kScoreScale));
    }
    case Ranking::Hyperliquid: {
      // (mark / entry) x (notional / account equity), mark/entry inverted for a short
      const i128 price_ratio = q > 0 ? trunc_div(notional * kScoreScale, abs_entry)
                                     : trunc_div(abs_entry * kScoreScale, std::max<i128>(1, notional));
      const i128 lev = equity > 0 ? std::min(kMaxLeverageScaled, trunc_div(notional * kScoreScale, equity)) : kMaxLeverageScaled;
      return clamp_i64(trunc_div(std::min<i128>(price_ratio, kMaxLeverageScaled) * lev, kScoreScale));
    }
  }
  return 0;
}

// ------------------------------------------------------------------ one step

// State of one liquidate() call: the backups that make it atomic, the ADL queues reused
// across the bankrupt accounts of the step, and the result being built.
class WaterfallRun {
 public:
  WaterfallRun(Engine& e, const WaterfallConfig& cfg) : e_(e), cfg_(cfg) {}
  // Start-of-step margins already computed by the step's revaluation pass (moved in).
  void use_start_margins(Engine::StepMargins&& m) {
    start_balance_ = std::move(m.balance);
    start_equity_ = std::move(m.equity);
    start_maintenance_ = std::move(m.maintenance);
    have_start_margins_ = true;
  }

  WaterfallResult run();
  void restore();

 private:
  using MarketState = Engine::MarketState;
  // What an account looked like before the step touched it; positions live in one arena
  // (backup_positions_[first, first + count)) so that backing up allocates nothing per account.
  struct Backup {
    std::uint32_t account;
    i64 balance;
    std::size_t first, count;
  };
  struct SavedPosition {
    MarketId market;
    i64 size, entry;
  };
  struct Closing {  // one position of the account being liquidated
    MarketId m;
    i64 q, mark_value, bk_value, exec_price, exec_value, deficit;
  };

  void touch(std::uint32_t a);
  void fill(std::uint32_t a, MarketId m, i64 dq, i64 cash_to_account);
  void liquidate_account(std::uint32_t a);
  bool try_partial(std::uint32_t a, std::vector<Closing>& cl);
  std::vector<Closing> closings(std::uint32_t a, bool with_executor);
  i64 pay_from_fund(std::uint32_t a, MarketId m, i64 wanted);
  void charge_fee(std::uint32_t a, const std::vector<Closing>& cl, i64 surplus);
  // `reserved`: part of the debt kept for the haircuts even if the fund could pay it (a fixed
  // theta in haircut mode).
  void settle(std::uint32_t a, const std::vector<Closing>& cl, const std::vector<i64>& fund_planned, i64 reserved = 0);
  void settle_flat(std::uint32_t a);
  void credit(std::uint32_t a, MarketId m, i64 amount);
  void mark_winner(std::uint32_t b) {
    if (!winner_touched_[b]) touched_list_.push_back(b);
    winner_touched_[b] = 1;
    if (!counted_[b]) { counted_[b] = 1; ++result_.totals.accounts_touched; }
  }
  i64 adl_close(std::uint32_t a, MarketId m, i64 lots, i64 value, i64 exec_price);
  // Closes the bankrupt position's lots against the chosen winners (winner, lots) and splits
  // `value` over them by lots. Returns the lots closed.
  i64 apply_adl_takes(std::uint32_t a, MarketId m, int sign, i64 lots, i64 value, i64 exec_price,
                      const std::vector<std::pair<std::uint32_t, i64>>& takes);
  // Opposite-side winners of market m (not account a), in account creation order, with their
  // sizes (lots) and ids.
  void opposite_winners(std::uint32_t a, MarketId m, int sign, std::vector<std::uint32_t>& who, std::vector<i64>& w,
                        std::vector<i64>& ids);
  // Close mode with a shared policy (everything but the queue): the round's ADL demand per
  // market and side is allocated at once, then handed to the bankrupt positions in order.
  bool batched_adl() const { return cfg_.mode == WaterfallMode::Close && cfg_.policy != LastResortPolicy::Queue; }
  void run_round_adl();
  // Policies served by the allocation kernel (capped/risk-aware pro-rata, lot min-max,
  // random walk): splits `budget` over winners `who` (creation order) with `capacity`.
  std::vector<i64> allocate_by_policy(i64 budget, const std::vector<std::uint32_t>& who, const std::vector<i64>& capacity,
                                      MarketId m);
  bool uses_kernel() const {
    return cfg_.policy != LastResortPolicy::Queue && cfg_.policy != LastResortPolicy::ProRata &&
           cfg_.policy != LastResortPolicy::FundingIndex;
  }
  bool fixed_theta() const { return cfg_.theta != kThetaDeficit; }
  i64 haircut(MarketId m, i64 amount);
  void resolve_pending_haircuts();
  std::vector<QueueEntry>& queue(MarketId m, int side);
  bool eligible_winner(std::uint32_t a) const { return a != exec_account_ && !excluded_[a]; }
  i64 equity(std::uint32_t a) const { return e_.margin_from_sums(e_.acc_[a].balance, e_.acc_[a].cache).equity; }

  Engine& e_;
  const WaterfallConfig& cfg_;
  WaterfallResult result_;
  std::uint32_t exec_account_ = AccountIndex::kNone;
  std::vector<std::uint8_t> excluded_;  // being liquidated this step: never a winner
  column<i64> start_balance_, start_equity_, start_maintenance_;  // account margins at the start of the step
  bool have_start_margins_ = false;
  std::vector<std::uint8_t> backed_up_;
  std::vector<std::uint8_t> winner_touched_;  // this round: candidates for the cascade
  std::vector<std::uint8_t> counted_;         // this step: for accounts_touched
  std::vector<std::uint32_t> touched_list_;   // accounts with winner_touched_ set
  std::vector<Backup> backups_;
  std::vector<SavedPosition> backup_positions_;
  std::unordered_map<int, std::vector<QueueEntry>> queues_;  // key: market * 2 + (side > 0)
  std::unordered_map<std::uint64_t, i64> haircut_taken_;    // (account, market) -> taken this step
  std::vector<std::pair<std::uint32_t, MarketId>> adl_log_;  // (winner, market) of every ADL close this round
  struct Pending {
    std::uint32_t account;
    MarketId market;
    i64 amount;
  };
  std::vector<Pending> pending_;  // deficits left for this round's haircuts
  struct AdlDemand {  // lots of a bankrupt position waiting for the round's shared ADL
    std::uint32_t account;
    MarketId m;
    int sign;  // of the bankrupt position
    i64 lots, value, exec_price;
  };
  struct DeferredSettlement {  // an account whose settlement waits for the round's ADL
    std::uint32_t account;
    std::vector<Closing> closings;
    std::vector<i64> fund_planned;
    i64 reserved;
  };
  std::vector<AdlDemand> demands_;
  std::vector<DeferredSettlement> deferred_;
  std::vector<i64> promised_;  // per pool: fund payments planned for accounts whose settlement waits
  std::vector<i64> matching_pool_;  // per pool, fixed theta: what deficit matching would have left
  int rounds_ = 0;
  std::uint64_t random_walks_ = 0;  // kernel allocations so far this step (random walk seeds)
};

void WaterfallRun::touch(std::uint32_t a) {
  if (backed_up_[a]) return;
  backed_up_[a] = 1;
  backups_.push_back(Backup{a, e_.acc_[a].balance, backup_positions_.size(), e_.acc_[a].count});
  for (std::uint32_t p = e_.acc_[a].start; p < e_.acc_[a].start + e_.acc_[a].count; ++p)
    backup_positions_.push_back(SavedPosition{e_.pos_market_[p], e_.pos_size_[p], e_.pos_entry_[p]});
}

void WaterfallRun::restore() {
  for (auto it = backups_.rbegin(); it != backups_.rend(); ++it) {
    const std::uint32_t a = it->account;
    std::vector<MarketId> now;
    for (std::uint32_t p = e_.acc_[a].start; p < e_.acc_[a].start + e_.acc_[a].count; ++p) now.push_back(e_.pos_market_[p]);
    for (MarketId m : now) e_.set_position(a, m, 0, 0);
    for (std::size_t i = it->first; i < it->first + it->count; ++i)
      e_.set_position(a, backup_positions_[i].market, backup_positions_[i].size, backup_positions_[i].entry);
    e_.acc_[a].balance = it->balance;
  }
}

// A close of `dq` lots for which the account receives `cash` (negative: pays).
void WaterfallRun::fill(std::uint32_t a, MarketId m, i64 dq, i64 cash) {
  touch(a);
  e_.apply_fill(a, m, dq, -cash);
}

std::vector<QueueEntry>& WaterfallRun::queue(MarketId m, int side) {
  const int key = m * 2 + (side > 0 ? 1 : 0);
  auto it = queues_.find(key);
  if (it != queues_.end()) return it->second;
  std::vector<QueueEntry>& q = queues_[key];
  const MarketState& mk = e_.markets_[static_cast<std::size_t>(m)];
  std::vector<std::uint32_t> who, slot;
  who.reserve(mk.accounts.size());
  slot.reserve(mk.accounts.size());
  for (std::uint32_t a : mk.accounts) {
    if (!eligible_winner(a)) continue;
    const std::uint32_t s = e_.find_slot(a, m);
    if ((e_.pos_size_[s] > 0) != (side > 0)) continue;
    who.push_back(a);
    slot.push_back(s);
  }
  // Scores use the account margins of the start of the step, so a queue does not depend on
  // which bankrupt account happened to need it first.
  q.resize(who.size());
  detail::parallel_for(who.size(), e_.threads_, 8192, [&](std::size_t b, std::size_t end) {
    for (std::size_t i = b; i < end; ++i) {
      const std::uint32_t a = who[i];
      q[i] = QueueEntry{e_.adl_score(slot[i], cfg_.ranking, start_balance_[a], start_equity_[a], start_maintenance_[a]),
                        e_.acc_id_[a], a};
    }
  });
  std::make_heap(q.begin(), q.end(), QueueOrder{});
  return q;
}

std::vector<WaterfallRun::Closing> WaterfallRun::closings(std::uint32_t a, bool with_executor) {
  // Bankruptcy values: the account's equity e' = cash + sum(mark values) is split by
  // maintenance share (docs/semantics.md), the remainder to the last position, so that
  // cash + sum(bk values) == 0 exactly.
  std::vector<Closing> cl;
  i128 cash = e_.acc_[a].balance;
  for (std::uint32_t p = e_.acc_[a].start; p < e_.acc_[a].start + e_.acc_[a].count; ++p) {
    const MarketState& mk = e_.markets_[static_cast<std::size_t>(e_.pos_market_[p])];
    cash -= e_.pos_entry_[p];
    cl.push_back(Closing{e_.pos_market_[p], e_.pos_size_[p], e_.value_money(mk, e_.pos_size_[p], mk.mark), 0, 0, 0, 0});
  }
  std::sort(cl.begin(), cl.end(), [](const Closing& x, const Closing& y) { return x.m < y.m; });
  i128 eq = cash;
  std::vector<i128> w(cl.size());
  i128 w_sum = 0;
  for (std::size_t i = 0; i < cl.size(); ++i) {
    const MarketState& mk = e_.markets_[static_cast<std::size_t>(cl[i].m)];
    eq += cl[i].mark_value;
    w[i] = e_.div_sr_.ceil(e_.contribution(mk, cl[i].q, 0, mk.mark).mm);
    w_sum += w[i];
  }
  if (w_sum == 0) {
    for (std::size_t i = 0; i < cl.size(); ++i) w[i] = abs64(cl[i].mark_value) + 1;
    w_sum = 0;
    for (i128 x : w) w_sum += x;
  }
  i128 assigned = 0;
  for (std::size_t i = 0; i < cl.size(); ++i) {
    const i128 share = i + 1 == cl.size() ? eq - assigned : floor_div(eq * w[i], w_sum);
    assigned += share;
    cl[i].bk_value = to_i64_checked(cl[i].mark_value - share, "bankruptcy value");
    if (with_executor) {
      const MarketState& mk = e_.markets_[static_cast<std::size_t>(cl[i].m)];
      cl[i].exec_price = e_.executor_price(mk, cl[i].q, cfg_.executor.kind == ExecutorKind::MarketClose ? cfg_.executor : ExecutorSpec{});
      cl[i].exec_value = e_.value_money(mk, cl[i].q, cl[i].exec_price);
      cl[i].deficit = to_i64_checked(static_cast<i128>(cl[i].bk_value) - cl[i].exec_value, "deficit");
    }
  }
  return cl;
}

i64 WaterfallRun::pay_from_fund(std::uint32_t a, MarketId m, i64 wanted) {
  if (wanted <= 0) return 0;
  const int pool = e_.markets_[static_cast<std::size_t>(m)].pool;
  const i64 paid = std::min(wanted, e_.insurance_.available(pool) - promised_[static_cast<std::size_t>(pool)]);
  if (paid <= 0) return 0;
  touch(a);
  e_.insurance_.move(e_.step_, pool, m, e_.acc_id_[a], -paid, LedgerReason::DeficitPayment);
  e_.acc_[a].balance += paid;
  result_.events.add(e_.step_, EventKind::FundPayment, e_.acc_id_[a], m, 0, 0, paid, 0, pool);
  result_.totals.fund_used += paid;
  return paid;
}

void WaterfallRun::charge_fee(std::uint32_t a, const std::vector<Closing>& cl, i64 surplus) {
  // The fund receives the surplus up to each position's fee, position by position.
  for (const Closing& c : cl) {
    if (surplus <= 0) break;
    const MarketState& mk = e_.markets_[static_cast<std::size_t>(c.m)];
    const i64 cap = static_cast<i64>(ceil_div(static_cast<i128>(abs64(c.exec_value)) * mk.spec.liquidation_fee_rate, kRateScale));
    const i64 fee = std::min(surplus, cap);
    if (fee <= 0) continue;
    e_.acc_[a].balance -= fee;
    e_.insurance_.move(e_.step_, mk.pool, c.m, e_.acc_id_[a], fee, LedgerReason::LiquidationFee);
    result_.events.add(e_.step_, EventKind::LiquidationFee, e_.acc_id_[a], c.m, 0, 0, -fee, 0, mk.pool);
    result_.totals.fund_fees += fee;
    surplus -= fee;
  }
}

// Closes `lots` of account a's position in m against opposite-side winners; the account
// receives `value` in total (signed like its position). Returns the lots closed.
void WaterfallRun::opposite_winners(std::uint32_t a, MarketId m, int sign, std::vector<std::uint32_t>& who, std::vector<i64>& w,
                                    std::vector<i64>& ids) {
  who.clear();
  w.clear();
  ids.clear();
  for (std::uint32_t b : e_.markets_[static_cast<std::size_t>(m)].accounts) {
    if (!eligible_winner(b) || b == a) continue;
    const i64 qb = e_.pos_size_[e_.find_slot(b, m)];
    if ((qb > 0) == (sign > 0)) continue;
    who.push_back(b);
  }
  // creation order, so the split does not depend on the market list's internal order
  std::sort(who.begin(), who.end());
  for (std::uint32_t b : who) {
    w.push_back(abs64(e_.pos_size_[e_.find_slot(b, m)]));
    ids.push_back(e_.acc_id_[b]);
  }
}

// Closes `lots` of account a's position in m against opposite-side winners taken from the
// ADL queue; the account receives `value` in total (signed like its position). Returns the
// lots closed.
i64 WaterfallRun::adl_close(std::uint32_t a, MarketId m, i64 lots, i64 value, i64 exec_price) {
  const std::uint32_t slot = e_.find_slot(a, m);
  const i64 q = e_.pos_size_[slot];
  const int sign = q > 0 ? 1 : -1;
  std::vector<std::pair<std::uint32_t, i64>> takes;  // (winner, lots)
  std::vector<QueueEntry>& heap = queue(m, -sign);
  i64 left = lots;
  std::vector<QueueEntry> put_back;
  while (left > 0 && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), QueueOrder{});
    const QueueEntry top = heap.back();
    heap.pop_back();
    if (!eligible_winner(top.account)) continue;
    const std::uint32_t s = e_.find_slot(top.account, m);
    if (s == Engine::kNoSlot || (e_.pos_size_[s] > 0) == (sign > 0)) continue;
    const i64 take = std::min(left, abs64(e_.pos_size_[s]));
    takes.push_back({top.account, take});
    left -= take;
    if (take < abs64(e_.pos_size_[s])) put_back.push_back(top);  // keeps its place for the next event
  }
  for (const QueueEntry& qe : put_back) {
    heap.push_back(qe);
    std::push_heap(heap.begin(), heap.end(), QueueOrder{});
  }
  return apply_adl_takes(a, m, sign, lots, value, exec_price, takes);
}

i64 WaterfallRun::apply_adl_takes(std::uint32_t a, MarketId m, int sign, i64 lots, i64 value, i64 exec_price,
                                  const std::vector<std::pair<std::uint32_t, i64>>& takes) {
  i64 closed = 0;
  for (const auto& t : takes) closed += t.second;
  if (closed == 0) return 0;
  if (closed < lots) value = static_cast<i64>(static_cast<i128>(value) * closed / lots);  // not enough winners
  // the account's side: value split by lots, the last counterparty takes the remainder
  i64 assigned = 0, lots_done = 0;
  const MarketState& mk = e_.markets_[static_cast<std::size_t>(m)];
  for (std::size_t i = 0; i < takes.size(); ++i) {
    const auto [b, x] = takes[i];
    lots_done += x;
    const i64 v = i + 1 == takes.size() ? value - assigned
                                        : static_cast<i64>(static_cast<i128>(value) * lots_done / closed) - assigned;
    assigned += v;
    // the winner reduces its opposite position by x lots and pays v (receives -v)
    fill(b, m, sign * x, -v);
    fill(a, m, -sign * x, v);
    adl_log_.push_back({b, m});
    mark_winner(b);
    const i64 px = clamp_i64(static_cast<i128>(abs64(v)) * e_.scale_s_ / (static_cast<i128>(x) * mk.pow10k));
    result_.events.add(e_.step_, EventKind::AdlClose, e_.acc_id_[b], m, e_.acc_id_[a], sign * x, -v, px, -1, exec_price);
    result_.totals.adl_notional += abs64(v);
    ++result_.totals.adl_closes;
  }
  return closed;
}

void WaterfallRun::run_round_adl() {
  if (demands_.empty()) return;
  // one allocation per market and side (markets ascending, long bankrupt positions first);
  // within a group the demands keep their liquidation order
  std::vector<std::size_t> order(demands_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    const AdlDemand &dx = demands_[x], &dy = demands_[y];
    return dx.m != dy.m ? dx.m < dy.m : dx.sign > dy.sign;
  });
  std::vector<std::uint32_t> who;
  std::vector<i64> w, ids;
  std::vector<std::pair<std::uint32_t, i64>> takes;
  for (std::size_t g = 0; g < order.size();) {
    std::size_t end = g;
    i128 total = 0;
    const MarketId m = demands_[order[g]].m;
    const int sign = demands_[order[g]].sign;
    while (end < order.size() && demands_[order[end]].m == m && demands_[order[end]].sign == sign) total += demands_[order[end++]].lots;
    opposite_winners(AccountIndex::kNone, m, sign, who, w, ids);
    i128 available = 0;
    for (i64 v : w) available += v;
    const i64 budget = static_cast<i64>(std::min(total, available));  // fewer winner lots: the executor takes the rest
    std::vector<i64> x = uses_kernel() ? allocate_by_policy(budget, who, w, m) : allocate_capped_pro_rata(budget, w, w, ids);
    // hand the winners' lots (creation order) to the demands (liquidation order)
    std::size_t wi = 0;
    const MarketState& mk = e_.markets_[static_cast<std::size_t>(m)];
    for (; g < end; ++g) {
      const AdlDemand& d = demands_[order[g]];
      takes.clear();
      i64 left = d.lots;
      while (left > 0 && wi < who.size()) {
        if (x[wi] == 0) {
          ++wi;
          continue;
        }
        const i64 t = std::min(left, x[wi]);
        takes.push_back({who[wi], t});
        x[wi] -= t;
        left -= t;
      }
      const i64 closed = apply_adl_takes(d.account, m, d.sign, d.lots, d.value, d.exec_price, takes);
      const i64 rest = d.lots - closed;
      if (rest > 0) {  // the executor takes what the winners could not
        const i64 cash = e_.value_money(mk, d.sign * rest, d.exec_price);
        fill(d.account, m, -d.sign * rest, cash);
        fill(exec_account_, m, d.sign * rest, -cash);
        result_.events.add(e_.step_, EventKind::LiquidationFill, e_.acc_id_[d.account], m, e_.acc_id_[exec_account_], -d.sign * rest,
                           cash, d.exec_price, -1, d.exec_price);
      }
    }
  }
  demands_.clear();
  for (DeferredSettlement& ds : deferred_) {
    for (std::size_t i = 0; i < ds.closings.size(); ++i)  // its promise becomes a payment
      promised_[static_cast<std::size_t>(e_.markets_[static_cast<std::size_t>(ds.closings[i].m)].pool)] -= ds.fund_planned[i];
    settle(ds.account, ds.closings, ds.fund_planned, ds.reserved);
  }
  deferred_.clear();
}

std::vector<i64> WaterfallRun::allocate_by_policy(i64 budget, const std::vector<std::uint32_t>& who,
                                                  const std::vector<i64>& capacity, MarketId m) {
  if (who.empty() || budget == 0) return std::vector<i64>(who.size(), 0);
  AllocRequest<i64> req;
  req.policy = kernel_policy(cfg_.policy);
  req.budget = budget;
  req.capacity = capacity;
  req.clip = true;  // a policy that cannot raise the whole budget takes what it can; the rest falls through
  const std::vector<i64> cap{cfg_.cap};
  std::vector<i64> leverage;
  switch (cfg_.policy) {
    case LastResortPolicy::CappedProRata:
      req.cap = cap;
      break;
    case LastResortPolicy::RiskAware: {
      // leverage of the winner's position: its notional at mark over its account's equity at
      // the start of the step (1e-8 units), capped like the ranking scores' leverage
      const MarketState& mk = e_.markets_[static_cast<std::size_t>(m)];
      leverage.resize(who.size());
      for (std::size_t i = 0; i < who.size(); ++i) {
        const std::uint32_t s = e_.find_slot(who[i], m);
        const i128 notional = static_cast<i128>(abs64(e_.value_money(mk, e_.pos_size_[s], mk.mark)));
        const i64 eq = start_equity_[who[i]];
        leverage[i] = eq > 0 ? static_cast<i64>(std::min<i128>(kMaxAllocLeverage, notional * kAllocRateScale / eq)) : kMaxAllocLeverage;
      }
      req.leverage = leverage;
      req.cap = cap;
      req.g = cfg_.g;
      break;
    }
    case LastResortPolicy::MinMaxLots:
      req.lot = cfg_.lot;
      break;
    case LastResortPolicy::RandomWalk:
      // a fresh, reproducible start for every allocation of the step
      req.seed = splitmix64(splitmix64(splitmix64(cfg_.seed) ^ static_cast<std::uint64_t>(e_.step_)) ^
                            (static_cast<std::uint64_t>(m) | (random_walks_ << 16)));
      ++random_walks_;
      break;
    default:
      break;
  }
  std::vector<i64> x = allocate(req);
  if (cfg_.policy == LastResortPolicy::MinMaxLots) {
    // Whole lots may overshoot the budget by less than one lot: the winner with the largest
    // fraction taken (ties: first) gives the excess back, so exactly the budget is taken.
    i128 sum = 0;
    for (i64 v : x) sum += v;
    if (sum > budget) {
      std::size_t top = x.size();
      for (std::size_t i = 0; i < x.size(); ++i) {
        if (x[i] == 0) continue;
        if (top == x.size() || static_cast<i128>(x[i]) * capacity[top] > static_cast<i128>(x[top]) * capacity[i]) top = i;
      }
      x[top] -= static_cast<i64>(sum - budget);
    }
  }
  return x;
}

// Takes `amount` from winners in market m (haircut mode). Returns what was raised (less than
// amount only when every winner's capacity is exhausted). One call per market per round:
// the deficits of a round are socialized together, so pro-rata stays O(n) per round.
i64 WaterfallRun::haircut(MarketId m, i64 amount) {
  if (amount <= 0) return 0;
  const MarketState& mk = e_.markets_[static_cast<std::size_t>(m)];
  std::vector<std::uint32_t> who;
  std::vector<i64> weight, cap, ids;
  // the kernel breaks ties by position: give it the winners in creation order
  std::vector<std::uint32_t> sorted_holders;
  if (uses_kernel()) {
    sorted_holders = mk.accounts;
    std::sort(sorted_holders.begin(), sorted_holders.end());
  }
  for (std::uint32_t b : uses_kernel() ? sorted_holders : mk.accounts) {
    if (!eligible_winner(b)) continue;
    const std::uint32_t s = e_.find_slot(b, m);
    const i64 free_equity = std::max<i64>(0, equity(b));
    const std::uint64_t key = (static_cast<std::uint64_t>(b) << 32) | static_cast<std::uint32_t>(m);
    const auto taken = haircut_taken_.find(key);
    const i64 already = taken == haircut_taken_.end() ? 0 : taken->second;
    i64 c;
    if (cfg_.policy == LastResortPolicy::FundingIndex) {
      c = free_equity;  // all open interest pays, capped by what the account has
    } else {
      const Engine::Contribution ct = e_.contribution(mk, e_.pos_size_[s], e_.pos_entry_[s], mk.mark);
      const i64 profit = static_cast<i64>(std::max<i128>(0, e_.div_s_.floor(ct.u)));
      c = std::min(free_equity, profit - already);  // only winners pay, from their profit
    }
    if (c <= 0) continue;
    who.push_back(b);
    cap.push_back(c);
    weight.push_back(cfg_.policy == LastResortPolicy::FundingIndex ? abs64(e_.pos_size_[s]) : c);
    ids.push_back(e_.acc_id_[b]);
  }
  i128 capacity = 0;
  for (i64 c : cap) capacity += c;
  const i64 budget = static_cast<i64>(std::min<i128>(amount, capacity));
  std::vector<i64> x(who.size(), 0);
  if (budget > 0) {
    if (cfg_.policy == LastResortPolicy::Queue) {
      std::vector<QueueEntry> order;
      for (std::size_t i = 0; i < who.size(); ++i)
        order.push_back(QueueEntry{e_.adl_score(e_.find_slot(who[i], m), cfg_.ranking, start_balance_[who[i]],
                                                start_equity_[who[i]], start_maintenance_[who[i]]),
                                   ids[i], static_cast<std::uint32_t>(i)});
      std::sort(order.begin(), order.end(), [](const QueueEntry& u, const QueueEntry& v) { return QueueOrder{}(v, u); });
      i64 left = budget;
      for (const QueueEntry& o : order) {
        if (left == 0) break;
        x[o.account] = std::min(left, cap[o.account]);
        left -= x[o.account];
      }
    } else if (uses_kernel()) {
      x = allocate_by_policy(budget, who, cap, m);
    } else {
      x = allocate_capped_pro_rata(budget, weight, cap, ids);
    }
  }
  i64 raised = 0;
  for (std::size_t i = 0; i < who.size(); ++i) {
    if (x[i] == 0) continue;
    const std::uint32_t b = who[i];
    touch(b);
    e_.acc_[b].balance -= x[i];
    haircut_taken_[(static_cast<std::uint64_t>(b) << 32) | static_cast<std::uint32_t>(m)] += x[i];
    mark_winner(b);
    result_.events.add(e_.step_, EventKind::Haircut, e_.acc_id_[b], m, 0, 0, -x[i], 0, -1);
    raised += x[i];
  }
  result_.totals.haircut_total += raised;
  return raised;
}

// Partial liquidation: close the same fraction f of every position through the executor,
// with f the smallest that restores maintenance if fills cost `slippage`:
// equity - f*cost >= (1 - f)*MM  =>  f >= (MM - equity) / (MM - cost).
bool WaterfallRun::try_partial(std::uint32_t a, std::vector<Closing>& cl) {
  const AccountMargin am = e_.margin_from_sums(e_.acc_[a].balance, e_.acc_[a].cache);
  if (am.equity < 0 || !am.liquidatable) return false;
  cl = closings(a, true);
  i128 cost = 0;  // value lost against the mark by closing everything through the executor
  for (const Closing& c : cl) cost += static_cast<i128>(c.mark_value) - c.exec_value;
  const i128 den = static_cast<i128>(am.maintenance) - cost;
  if (den <= 0) return false;
  const i128 num = static_cast<i128>(am.maintenance) - am.equity;
  if (num >= den) return false;  // closing everything would not be enough: full liquidation
  for (const Closing& c : cl) {
    const i64 lots = static_cast<i64>(std::min<i128>(abs64(c.q), ceil_div(static_cast<i128>(abs64(c.q)) * num, den)));
    if (lots == 0) continue;
    const MarketState& mk = e_.markets_[static_cast<std::size_t>(c.m)];
    const i64 dq = c.q > 0 ? -lots : lots;
    const i64 cash = -e_.value_money(mk, dq, c.exec_price);
    fill(a, c.m, dq, cash);
    fill(exec_account_, c.m, -dq, -cash);
    result_.events.add(e_.step_, EventKind::PartialFill, e_.acc_id_[a], c.m, e_.acc_id_[exec_account_], dq, cash, c.exec_price, -1,
                       c.exec_price);
    const i64 fee_cap = static_cast<i64>(ceil_div(static_cast<i128>(abs64(cash)) * mk.spec.liquidation_fee_rate, kRateScale));
    const i64 fee = std::min<i64>(fee_cap, std::max<i64>(0, equity(a)));
    if (fee > 0) {
      e_.acc_[a].balance -= fee;
      e_.insurance_.move(e_.step_, mk.pool, c.m, e_.acc_id_[a], fee, LedgerReason::LiquidationFee);
      result_.events.add(e_.step_, EventKind::LiquidationFee, e_.acc_id_[a], c.m, 0, 0, -fee, 0, mk.pool);
      result_.totals.fund_fees += fee;
    }
  }
  ++result_.totals.partial_liquidations;
  return e_.acc_[a].count == 0 || !e_.margin_from_sums(e_.acc_[a].balance, e_.acc_[a].cache).liquidatable;
}

void WaterfallRun::liquidate_account(std::uint32_t a) {
  touch(a);
  ++result_.totals.liquidated_accounts;
  const i64 id = e_.acc_id_[a];
  if (cfg_.executor.partial && cfg_.executor.kind == ExecutorKind::MarketClose) {
    std::vector<Closing> partial;
    const bool done = try_partial(a, partial);
    if (e_.acc_[a].count == 0) {  // rounding up closed everything: settle what is left
      settle(a, partial, {});
      return;
    }
    if (done) return;
  }
  if (e_.acc_[a].count == 0) return;

  if (cfg_.executor.kind == ExecutorKind::Backstop) {
    for (const Closing& c : closings(a, false)) {
      fill(a, c.m, -c.q, c.bk_value);
      fill(exec_account_, c.m, c.q, -c.bk_value);
      const MarketState& mk = e_.markets_[static_cast<std::size_t>(c.m)];
      const i64 px = clamp_i64(static_cast<i128>(abs64(c.bk_value)) * e_.scale_s_ / (static_cast<i128>(abs64(c.q)) * mk.pow10k));
      result_.events.add(e_.step_, EventKind::BackstopFill, id, c.m, e_.acc_id_[exec_account_], -c.q, c.bk_value, px, -1, px);
    }
    return;
  }

  std::vector<Closing> cl = closings(a, true);
  i128 total_deficit = 0, surplus = 0;
  for (const Closing& c : cl) {
    total_deficit += c.deficit;
    if (c.deficit < 0) surplus -= c.deficit;
  }
  if (total_deficit > 0) result_.totals.deficit += static_cast<i64>(total_deficit);

  // Plan: surplus positions offset deficits first, then each market's pool, then the last resort.
  std::vector<i64> adl_lots(cl.size(), 0), fund_planned(cl.size(), 0), last_resort(cl.size(), 0);
  if (total_deficit > 0) {
    i128 offset = surplus;
    for (std::size_t i = 0; i < cl.size(); ++i) {
      if (cl[i].deficit <= 0) continue;
      const i64 use = static_cast<i64>(std::min<i128>(offset, cl[i].deficit));
      offset -= use;
      const i64 rest = cl[i].deficit - use;
      const int pool = e_.markets_[static_cast<std::size_t>(cl[i].m)].pool;
      // what accounts waiting for the round's ADL were promised is not available any more
      i64 avail = e_.insurance_.available(pool) - promised_[static_cast<std::size_t>(pool)];
      for (std::size_t j = 0; j < i; ++j)  // earlier positions' plans on the same pool
        if (e_.markets_[static_cast<std::size_t>(cl[j].m)].pool == pool) avail -= fund_planned[j];
      fund_planned[i] = std::max<i64>(0, std::min(rest, avail));
      if (fixed_theta()) {
        // last_resort_needed: what deficit matching would have left to the last resort, with a
        // counterfactual pool that pays every deficit of the step in turn
        i64& left = matching_pool_[static_cast<std::size_t>(pool)];
        const i64 matching = std::max<i64>(0, std::min(rest, left));
        left -= matching;
        result_.totals.last_resort_needed += rest - matching;
        // the last resort takes at least theta of the deficit
        const i64 share = static_cast<i64>(ceil_div(static_cast<i128>(rest) * cfg_.theta, kRateScale));
        fund_planned[i] = std::min(fund_planned[i], rest - share);
      } else {
        result_.totals.last_resort_needed += rest - fund_planned[i];
      }
      last_resort[i] = rest - fund_planned[i];
      result_.totals.last_resort_planned += last_resort[i];
      if (cfg_.mode == WaterfallMode::Close && last_resort[i] > 0)
        adl_lots[i] = static_cast<i64>(std::min<i128>(abs64(cl[i].q), ceil_div(static_cast<i128>(abs64(cl[i].q)) * last_resort[i], cl[i].deficit)));
    }
  }

  // Fills: the executor takes what is not deleveraged.
  for (std::size_t i = 0; i < cl.size(); ++i) {
    const Closing& c = cl[i];
    const MarketState& mk = e_.markets_[static_cast<std::size_t>(c.m)];
    const i64 sign = c.q > 0 ? 1 : -1;
    if (adl_lots[i] > 0) {
      // the deleveraged part closes at its share of the bankruptcy value (or at a mark)
      const i64 bk_part = adl_lots[i] == abs64(c.q) ? c.bk_value
                                                    : static_cast<i64>(static_cast<i128>(c.bk_value) * adl_lots[i] / abs64(c.q));
      i64 adl_value = bk_part;
      if (cfg_.adl_price != AdlPrice::Bankruptcy) {
        const i64 px = cfg_.adl_price == AdlPrice::Mark ? mk.mark : (mk.previous_mark > 0 ? mk.previous_mark : mk.mark);
        adl_value = e_.value_money(mk, sign * adl_lots[i], px);
      }
      if (batched_adl())  // the lots stay open until the round's shared ADL
        demands_.push_back(AdlDemand{a, c.m, static_cast<int>(sign), adl_lots[i], adl_value, c.exec_price});
      else
        adl_lots[i] = adl_close(a, c.m, adl_lots[i], adl_value, c.exec_price);
    }
    const i64 exec_lots = abs64(c.q) - adl_lots[i];
    if (exec_lots > 0) {
      const i64 cash = e_.value_money(mk, sign * exec_lots, c.exec_price);
      fill(a, c.m, -sign * exec_lots, cash);
      fill(exec_account_, c.m, sign * exec_lots, -cash);
      result_.events.add(e_.step_, EventKind::LiquidationFill, id, c.m, e_.acc_id_[exec_account_], -sign * exec_lots, cash, c.exec_price,
                         -1, c.exec_price);
    }
  }

  i64 reserved = 0;
  if (fixed_theta() && cfg_.mode == WaterfallMode::Haircut)
    for (i64 v : last_resort) reserved += v;
  if (!demands_.empty() && demands_.back().account == a) {  // settles after the round's ADL
    for (std::size_t i = 0; i < cl.size(); ++i)
      promised_[static_cast<std::size_t>(e_.markets_[static_cast<std::size_t>(cl[i].m)].pool)] += fund_planned[i];
    deferred_.push_back(DeferredSettlement{a, std::move(cl), std::move(fund_planned), reserved});
    return;
  }
  settle(a, cl, fund_planned, reserved);
}

// Settlement of a flat account: its balance is its surplus (the fund takes the fee) or its
// deficit (the fund pays what is planned, then whatever it can, then winners of the
// account's markets are haircut; what nobody can cover is bad debt).
void WaterfallRun::settle(std::uint32_t a, const std::vector<Closing>& cl, const std::vector<i64>& fund_planned, i64 reserved) {
  if (e_.acc_[a].balance > 0) {
    charge_fee(a, cl, e_.acc_[a].balance);
    return;
  }
  for (std::size_t i = 0; i < cl.size() && e_.acc_[a].balance < 0; ++i)
    if (i < fund_planned.size() && fund_planned[i] > 0) pay_from_fund(a, cl[i].m, std::min(fund_planned[i], -e_.acc_[a].balance));
  // Rounding dust, an ADL at a mark, or haircut mode leave a remainder: the fund first,
  // then (at the end of the round) winners of the market that caused most of it.
  reserved = std::min(reserved, std::max<i64>(0, -e_.acc_[a].balance));
  for (std::size_t i = 0; i < cl.size() && e_.acc_[a].balance + reserved < 0; ++i)
    pay_from_fund(a, cl[i].m, -e_.acc_[a].balance - reserved);
  if (e_.acc_[a].balance < 0) {
    std::size_t worst = 0;
    for (std::size_t i = 1; i < cl.size(); ++i)
      if (cl[i].deficit > cl[worst].deficit) worst = i;
    pending_.push_back(Pending{a, cl.empty() ? MarketId{0} : cl[worst].m, -e_.acc_[a].balance});
  }
}

// Socializes the round's remaining deficits: per market from its winners, then what is
// left from the winners of every market, then bad debt. Creditors are paid in the order
// they were liquidated (worst first).
void WaterfallRun::resolve_pending_haircuts() {
  if (pending_.empty()) return;
  std::vector<i64> raised_left(e_.markets_.size(), 0);
  std::vector<i128> wanted(e_.markets_.size(), 0);
  for (const Pending& p : pending_) wanted[static_cast<std::size_t>(p.market)] += p.amount;
  for (std::size_t m = 0; m < wanted.size(); ++m)
    if (wanted[m] > 0) raised_left[m] = haircut(static_cast<MarketId>(m), to_i64_checked(wanted[m], "haircut"));
  i128 unpaid = 0;
  for (Pending& p : pending_) {
    i64& pot = raised_left[static_cast<std::size_t>(p.market)];
    const i64 pay = std::min(pot, p.amount);
    pot -= pay;
    p.amount -= pay;
    unpaid += p.amount;
    if (pay > 0) credit(p.account, p.market, pay);
  }
  if (unpaid > 0) {  // other markets' winners cover what the causing market could not
    i64 extra = 0;
    for (std::size_t m = 0; m < e_.markets_.size() && extra < unpaid; ++m)
      extra += haircut(static_cast<MarketId>(m), static_cast<i64>(unpaid - extra));
    for (Pending& p : pending_) {
      const i64 pay = std::min(extra, p.amount);
      extra -= pay;
      p.amount -= pay;
      if (pay > 0) credit(p.account, -1, pay);
      // a fixed theta kept this debt from the fund; with the winners exhausted, the fund pays
      if (p.amount > 0 && fixed_theta()) p.amount -= pay_from_fund(p.account, p.market, p.amount);
      if (p.amount > 0) {
        result_.events.add(e_.step_, EventKind::BadDebt, e_.acc_id_[p.account], -1, 0, 0, p.amount, 0, -1);
        result_.totals.bad_debt += p.amount;
      }
    }
  }
  pending_.clear();
}

void WaterfallRun::credit(std::uint32_t a, MarketId m, i64 amount) {
  touch(a);
  e_.acc_[a].balance += amount;
  result_.events.add(e_.step_, EventKind::SocializedCredit, e_.acc_id_[a], m, 0, 0, amount, 0, -1);
}

// A winner that ADL closes left flat and in debt: settle it against the markets it was
// deleveraged in.
void WaterfallRun::settle_flat(std::uint32_t a) {
  touch(a);
  std::vector<Closing> cl;
  auto it = std::lower_bound(adl_log_.begin(), adl_log_.end(), std::make_pair(a, std::numeric_limits<MarketId>::min()));
  for (; it != adl_log_.end() && it->first == a; ++it)
    if (cl.empty() || cl.back().m != it->second) cl.push_back(Closing{it->second, 0, 0, 0, 0, 0, 1});
  settle(a, cl, {});
}

WaterfallResult WaterfallRun::run() {
  const std::size_t n = e_.acc_id_.size();
  result_.totals.step = e_.step_;
  result_.events.sink = e_.event_sink_;
  exec_account_ = e_.account_index_or_throw(cfg_.executor.account, "executor.account", 0);
  promised_.assign(static_cast<std::size_t>(e_.insurance_.pool_count()), 0);
  matching_pool_.resize(promised_.size());
  for (std::size_t p = 0; p < matching_pool_.size(); ++p) matching_pool_[p] = e_.insurance_.available(static_cast<int>(p));
  excluded_.assign(n, 0);
  backed_up_.assign(n, 0);
  winner_touched_.assign(n, 0);
  counted_.assign(n, 0);

  // worst margin first: negative equity deepest first, then maintenance/equity descending
  struct Candidate {
    std::uint32_t a;
    i64 equity, maintenance, id;
  };
  auto worse = [](const Candidate& x, const Candidate& y) {
    const bool xb = x.equity <= 0, yb = y.equity <= 0;
    if (xb != yb) return xb;
    if (xb) return x.equity != y.equity ? x.equity < y.equity : x.id < y.id;
    const i128 l = static_cast<i128>(x.maintenance) * y.equity, r = static_cast<i128>(y.maintenance) * x.equity;
    return l != r ? l > r : x.id < y.id;
  };
  if (!have_start_margins_) {
    start_balance_.resize(n);
    start_equity_.resize(n);
    start_maintenance_.resize(n);
    detail::parallel_for(n, e_.threads_, 16384, [&](std::size_t b, std::size_t end) {
      for (std::size_t a = b; a < end; ++a) {
        const AccountMargin am = e_.margin_from_sums(e_.acc_[a].balance, e_.acc_[a].cache);
        start_balance_[a] = e_.acc_[a].balance;
        start_equity_[a] = am.equity;
        start_maintenance_[a] = am.maintenance;
      }
    });
  }
  // The first round's candidates come straight from the start-of-step margins: accounts with
  // positions below maintenance (a flat account's old debt is not this step's to settle).
  std::vector<std::uint32_t> checked;
  for (std::uint32_t a = 0; a < n; ++a)  // the margins first: they are streamed, the account lines are not
    if (start_equity_[a] < start_maintenance_[a] && e_.acc_[a].count > 0) checked.push_back(a);
  bool first_round = true;
  while (!checked.empty()) {
    std::sort(adl_log_.begin(), adl_log_.end());  // settle_flat looks winners up by account
    std::vector<Candidate> work;
    for (std::uint32_t a : checked) {
      if (a == exec_account_) continue;
      if (e_.acc_[a].count == 0) {
        if (!first_round && e_.acc_[a].balance < 0 && excluded_[a] == 0) {  // a winner ADL left flat in debt
          excluded_[a] = 1;
          settle_flat(a);
        }
        continue;
      }
      const AccountMargin am = e_.margin_from_sums(e_.acc_[a].balance, e_.acc_[a].cache);
      if (am.liquidatable) work.push_back(Candidate{a, am.equity, am.maintenance, e_.acc_id_[a]});
    }
    first_round = false;
    std::sort(work.begin(), work.end(), worse);
    for (const Candidate& c : work) excluded_[c.a] = 1;
    adl_log_.clear();
    for (const Candidate& c : work) liquidate_account(c.a);
    run_round_adl();
    resolve_pending_haircuts();
    // a cascade: winners the step deleveraged or haircut may now be liquidatable themselves
    checked.clear();
    std::sort(touched_list_.begin(), touched_list_.end());
    for (std::uint32_t a : touched_list_) {
      winner_touched_[a] = 0;
      if (!excluded_[a]) checked.push_back(a);
    }
    touched_list_.clear();
    ++rounds_;
  }
  return std::move(result_);
}

WaterfallResult Engine::liquidate(const WaterfallConfig& config) {
  if (config.executor.slippage_rate < 0 || config.executor.slippage_rate > kRateScale)
    throw InvalidInput("executor.slippage must be between 0 and 1");
  if (config.executor.impact_rate < 0 || config.executor.impact_depth < 0)
    throw InvalidInput("executor.impact must not be negative");
  if (config.theta != kThetaDeficit && (config.theta < 0 || config.theta > kRateScale))
    throw InvalidInput("theta must be 'deficit' or between 0 and 1 (got " + std::to_string(config.theta) + " x 1e-8)");
  if (config.cap < 0 || config.cap > kRateScale)
    throw InvalidInput("cap must be between 0 and 1 (got " + std::to_string(config.cap) + " x 1e-8)");
  if (config.lot <= 0) throw InvalidInput("lot must be positive (got " + std::to_string(config.lot) + ")");
  if (!(config.g.param >= 0 && config.g.param < 1e300)) throw InvalidInput("g: the parameter must be a finite number >= 0");
  if (config.mode == WaterfallMode::Close && config.policy == LastResortPolicy::FundingIndex)
    throw InvalidInput("policy 'funding_index' is a haircut policy: use mode='haircut'");
  account_index_or_throw(config.executor.account, "executor.account", 0);
  require_marks_for_open_positions();
  StepMargins start;
  const bool have_margins = revalue_for_step(start);
  const InsuranceFund::Mark fund_before = insurance_.save_point();
  ++step_;
  insurance_.open_step(step_);
  WaterfallRun run(*this, config);
  if (have_margins) run.use_start_margins(std::move(start));
  try {
    WaterfallResult r = run.run();
    r.events.sink = nullptr;  // the result does not hand out the engine's sink
    insurance_.close_step(step_);
    compact_if_wasteful();
    return r;
  } catch (...) {
    run.restore();
    --step_;
    insurance_.restore(fund_before);
    throw;
  }
}

}  // namespace deleverage
