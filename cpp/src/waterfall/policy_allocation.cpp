// The allocation kernel's policies as a waterfall step uses them: the request built from
// the step's configuration (the risk-aware leverage, the random walk's seeds), the lot
// policy's exact budget, and the step's cap allowance per winner.
#include "policy_allocation.hpp"

#include "deleverage/allocate.hpp"

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

std::vector<i64> PolicyAllocation::allocate(i64 budget, const std::vector<std::uint32_t>& who,
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
        const i64 eq = s_.start_equity(who[i]);
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
  std::vector<i64> x = deleverage::allocate(req);
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

void PolicyAllocation::clip_to_cap_allowance(std::vector<i64>& x, const std::vector<std::uint32_t>& who,
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

}  // namespace deleverage
