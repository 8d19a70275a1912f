// The last resort beyond the queue: policies that allocate a round's ADL demand at once
// (pro-rata and the allocation kernel's policies), haircuts, socialized credits and bad debt.
#include "deleverage/water_fill.hpp"
#include "waterfall_run.hpp"

namespace deleverage {

namespace {
// The same cap as the ranking scores' leverage, in the allocation kernel's 1e-8 units.
constexpr i64 kMaxAllocLeverage = i64{1'000'000} * kAllocRateScale;

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The kernel's algorithm for a waterfall policy: the queue and funding_index raise their
// amounts as weighted pro-rata here (the queue's order is the waterfall's own).
Policy kernel_policy(Policy p) { return is_kernel_policy(p) && p != Policy::Queue ? p : Policy::ProRata; }
}  // namespace

void WaterfallRun::opposite_winners(std::uint32_t a, MarketId m, int sign, std::vector<std::uint32_t>& who,
                                    std::vector<i64>& w, std::vector<i64>& ids) {
  who.clear();
  w.clear();
  ids.clear();
  for (std::uint32_t b : e_.book().holders(m)) {
    if (!eligible_winner(b) || b == a) continue;
    const i64 qb = e_.book().sizes()[e_.find_slot(b, m)];
    if ((qb > 0) == (sign > 0)) continue;
    who.push_back(b);
  }
  // creation order, so the split does not depend on the market list's internal order
  std::sort(who.begin(), who.end());
  for (std::uint32_t b : who) {
    w.push_back(abs64(e_.book().sizes()[e_.find_slot(b, m)]));
    ids.push_back(e_.book().ids()[b]);
  }
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
    while (end < order.size() && demands_[order[end]].m == m && demands_[order[end]].sign == sign)
      total += demands_[order[end++]].lots;
    opposite_winners(AccountIndex::kNone, m, sign, who, w, ids);
    i128 available = 0;
    for (i64 v : w) available += v;
    const i64 budget = static_cast<i64>(std::min(total, available));  // fewer winner lots: the executor takes the rest
    std::vector<i64> x =
        uses_kernel() ? allocate_by_policy(budget, who, w, m, true) : allocate_capped_pro_rata(budget, w, w, ids);
    // hand the winners' lots (creation order) to the demands (liquidation order)
    std::size_t wi = 0;
    const MarketState& mk = e_.market_table()[static_cast<std::size_t>(m)];
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
      const i64 closed = apply_adl_takes(d.account, m, d.sign, d.lots, d.value, d.bk, d.exec_price, takes);
      const i64 rest = d.lots - closed;
      if (rest > 0) {  // the executor takes what the winners could not
        const i64 cash = e_.market_table().value_money(mk, d.sign * rest, d.exec_price);
        fill(d.account, m, -d.sign * rest, cash);
        fill(exec_account_, m, d.sign * rest, -cash);
        result_.events.add(e_.step(), EventKind::LiquidationFill, e_.book().ids()[d.account], m,
                           e_.book().ids()[exec_account_], -d.sign * rest, cash, d.exec_price, -1, d.exec_price);
      }
    }
  }
  demands_.clear();
  for (DeferredSettlement& ds : deferred_) {
    for (std::size_t i = 0; i < ds.closings.size(); ++i)  // its promise becomes a payment
      promised_[static_cast<std::size_t>(e_.market_table()[static_cast<std::size_t>(ds.closings[i].m)].pool)] -=
          ds.fund_planned[i];
    settle(ds.account, ds.closings, ds.fund_planned, ds.reserved);
  }
  deferred_.clear();
}

std::vector<i64> WaterfallRun::allocate_by_policy(i64 budget, const std::vector<std::uint32_t>& who,
                                                  const std::vector<i64>& capacity, MarketId m, bool lots) {
  if (who.empty() || budget == 0) return std::vector<i64>(who.size(), 0);
  AllocRequest<i64> req;
  req.policy = kernel_policy(cfg_.policy);
  req.budget = budget;
  req.capacity = capacity;
  req.clip = true;  // a policy that cannot raise the whole budget takes what it can; the rest falls through
  req.threads = e_.threads();
  const std::vector<i64> cap{cfg_.cap};
  std::vector<i64> leverage;
  switch (cfg_.policy) {
    case Policy::CappedProRata:
      req.cap = cap;
      break;
    case Policy::RiskAware: {
      // leverage of the winner's position: its notional at mark over its account's equity at
      // the start of the step (1e-8 units), capped like the ranking scores' leverage
      const MarketState& mk = e_.market_table()[static_cast<std::size_t>(m)];
      leverage.resize(who.size());
      for (std::size_t i = 0; i < who.size(); ++i) {
        const std::uint32_t s = e_.find_slot(who[i], m);
        const i128 notional =
            static_cast<i128>(abs64(e_.market_table().value_money(mk, e_.book().sizes()[s], mk.mark)));
        const i64 eq = start_equity(who[i]);
        leverage[i] = eq > 0 ? static_cast<i64>(std::min<i128>(kMaxAllocLeverage, notional * kAllocRateScale / eq))
                             : kMaxAllocLeverage;
      }
      req.leverage = leverage;
      req.cap = cap;
      req.g = cfg_.g;
      break;
    }
    case Policy::MinMaxLots:
      req.lot = cfg_.lot;
      break;
    case Policy::RandomWalk:
      // a fresh, reproducible start for every allocation: keyed by the account the liquidation
      // started from (not the step), so a batch step and per-account calls draw the same
      req.seed = splitmix64(splitmix64(splitmix64(cfg_.seed) ^ static_cast<std::uint64_t>(round_key_)) ^
                            (static_cast<std::uint64_t>(m) | (random_walks_ << 16)));
      ++random_walks_;
      break;
    default:
      break;
  }
  std::vector<i64> x = allocate(req);
  if (cfg_.policy == Policy::MinMaxLots) {
    // Whole lots may overshoot the budget by less than one lot: the winner with the largest
    // fraction taken (ties: first) gives the excess back, so exactly the budget is taken.
    i128 sum = 0;
    for (i64 v : x) sum += v;
    if (sum > budget) {
      std::size_t top = x.size();
      for (std::size_t i = 0; i < x.size(); ++i) {
        if (x[i] == 0) continue;
        if (top == x.size() || static_cast<i128>(x[i]) * capacity[top] > static_cast<i128>(x[top]) * capacity[i])
          top = i;
      }
      x[top] -= static_cast<i64>(sum - budget);
    }
  }
  clip_to_cap_allowance(x, who, capacity, m, lots);
  return x;
}

void WaterfallRun::clip_to_cap_allowance(std::vector<i64>& x, const std::vector<std::uint32_t>& who,
                                         const std::vector<i64>& capacity, MarketId m, bool lots) {
  const bool capped = cfg_.policy == Policy::CappedProRata || cfg_.policy == Policy::RiskAware;
  if (!capped || cfg_.cap >= kRateScale) return;
  for (std::size_t i = 0; i < who.size(); ++i) {
    const std::uint64_t key =
        (static_cast<std::uint64_t>(who[i]) << 11) | (static_cast<std::uint64_t>(m) << 1) | (lots ? 1u : 0u);
    const i64 first = static_cast<i64>(static_cast<i128>(capacity[i]) * cfg_.cap / kRateScale);  // the kernel's own K_i
    CapUse& use = cap_use_.try_emplace(key, CapUse{first, 0}).first->second;
    x[i] = std::min(x[i], use.allowance - use.used);  // what is clipped stays unplaced
    use.used += x[i];
  }
}

i64 WaterfallRun::haircut_capacity(std::uint32_t b, MarketId m) const {
  const MarketState& mk = e_.market_table()[static_cast<std::size_t>(m)];
  const i64 free_equity = std::max<i64>(0, equity(b));
  if (cfg_.policy == Policy::FundingIndex)
    return free_equity;  // all open interest pays, capped by what the account has
  const std::uint32_t s = e_.find_slot(b, m);
  const auto taken = haircut_taken_.find((static_cast<std::uint64_t>(b) << 32) | static_cast<std::uint32_t>(m));
  const i64 already = taken == haircut_taken_.end() ? 0 : taken->second;
  const Engine::Contribution ct = e_.contribution(mk, e_.book().sizes()[s], e_.book().entries()[s], mk.mark);
  const i64 profit = static_cast<i64>(std::max<i128>(0, e_.market_table().div_s().floor(ct.u)));
  return std::min(free_equity, profit - already);  // only winners pay, from their profit
}

// The haircut of the policies that allocate (pro-rata, funding index, the kernel's): one pass
// over the market's holders, then the allocation of what they can pay.
void WaterfallRun::allocated_haircut(MarketId m, i64 amount, std::vector<std::uint32_t>& who, std::vector<i64>& x) {
  const std::vector<std::uint32_t>& holders = e_.book().holders(m);
  std::vector<i64> weight, cap, ids;
  // the kernel breaks ties by position: give it the winners in creation order
  std::vector<std::uint32_t> sorted_holders;
  if (uses_kernel()) {
    sorted_holders = holders;
    std::sort(sorted_holders.begin(), sorted_holders.end());
  }
  for (std::uint32_t b : uses_kernel() ? sorted_holders : holders) {
    if (!eligible_winner(b)) continue;
    const i64 c = haircut_capacity(b, m);
    if (c <= 0) continue;
    who.push_back(b);
    cap.push_back(c);
    weight.push_back(cfg_.policy == Policy::FundingIndex ? abs64(e_.book().sizes()[e_.find_slot(b, m)]) : c);
    ids.push_back(e_.book().ids()[b]);
  }
  i128 capacity = 0;
  for (i64 c : cap) capacity += c;
  const i64 budget = static_cast<i64>(std::min<i128>(amount, capacity));
  x.assign(who.size(), 0);
  if (budget <= 0) return;
  x = uses_kernel() ? allocate_by_policy(budget, who, cap, m, false)
                    : allocate_capped_pro_rata(budget, weight, cap, ids);
}

// Takes `amount` from winners in market m (haircut mode). Returns what was raised (less than
// amount only when every winner's capacity is exhausted). One call per market per round:
// the deficits of a round are socialized together, so pro-rata stays O(n) per round.
i64 WaterfallRun::haircut(MarketId m, i64 amount) {
  if (amount <= 0 || cfg_.policy == Policy::None) return 0;  // no last resort: bad debt
  std::vector<std::uint32_t> who;
  std::vector<i64> x;
  if (cfg_.policy == Policy::Queue)
    queue_haircut(m, amount, who, x);
  else
    allocated_haircut(m, amount, who, x);
  i64 raised = 0;
  for (std::size_t i = 0; i < who.size(); ++i) {
    if (x[i] == 0) continue;
    const std::uint32_t b = who[i];
    touch(b);
    e_.add_to_balance(b, -x[i]);
    e_.note_changed(b);
    haircut_taken_[(static_cast<std::uint64_t>(b) << 32) | static_cast<std::uint32_t>(m)] += x[i];
    mark_winner(b);
    result_.events.add(e_.step(), EventKind::Haircut, e_.book().ids()[b], m, 0, 0, -x[i], 0, -1);
    raised += x[i];
  }
  result_.totals.haircut_total += raised;
  return raised;
}

// Socializes the round's remaining deficits: per market from its winners, then what is
// left from the winners of every market, then bad debt. Creditors are paid in the order
// they were liquidated (worst first).
void WaterfallRun::resolve_pending_haircuts() {
  if (pending_.empty()) return;
  std::vector<i64> raised_left(e_.market_table().size(), 0);
  std::vector<i128> wanted(e_.market_table().size(), 0);
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
    for (std::size_t m = 0; m < e_.market_table().size() && extra < unpaid; ++m)
      extra += haircut(static_cast<MarketId>(m), static_cast<i64>(unpaid - extra));
    for (Pending& p : pending_) {
      const i64 pay = std::min(extra, p.amount);
      extra -= pay;
      p.amount -= pay;
      if (pay > 0) credit(p.account, -1, pay);
      // a fixed theta kept this debt from the fund; with the winners exhausted, the fund pays
      if (p.amount > 0 && fixed_theta()) p.amount -= pay_from_fund(p.account, p.market, p.amount);
      if (p.amount > 0) {
        result_.events.add(e_.step(), EventKind::BadDebt, e_.book().ids()[p.account], -1, 0, 0, p.amount, 0, -1);
        result_.totals.bad_debt += p.amount;
      }
    }
  }
  pending_.clear();
}

void WaterfallRun::credit(std::uint32_t a, MarketId m, i64 amount) {
  touch(a);
  e_.add_to_balance(a, amount);
  e_.note_changed(a);
  result_.events.add(e_.step(), EventKind::SocializedCredit, e_.book().ids()[a], m, 0, 0, amount, 0, -1);
}

}  // namespace deleverage
