// Haircut mode's last resort and bad debt: a round's remaining deficits are taken from
// winners' profits (the queue's order, or an allocation), paid to the accounts in deficit as
// socialized credits; what nobody can cover is bad debt.
#include "haircuts.hpp"

#include "deleverage/water_fill.hpp"

namespace deleverage {

void Haircuts::note_haircut_winners() {
  for (const auto& taken : haircut_taken_) e_.note_changed(static_cast<std::uint32_t>(taken.first >> 32));
}

i64 Haircuts::haircut_capacity(std::uint32_t b, MarketId m) const {
  const MarketState& mk = e_.market_table()[static_cast<std::size_t>(m)];
  const i64 free_equity = std::max<i64>(0, s_.equity(b));
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
void Haircuts::allocated_haircut(MarketId m, i64 amount, std::vector<std::uint32_t>& who, std::vector<i64>& x) {
  const std::vector<std::uint32_t>& holders = e_.book().holders(m);
  std::vector<i64> weight, cap, ids;
  // the kernel breaks ties by position: give it the winners in creation order
  std::vector<std::uint32_t> sorted_holders;
  if (allocation_.uses_kernel()) {
    sorted_holders = holders;
    std::sort(sorted_holders.begin(), sorted_holders.end());
  }
  for (std::uint32_t b : allocation_.uses_kernel() ? sorted_holders : holders) {
    if (!s_.eligible_winner(b)) continue;
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
  x = allocation_.uses_kernel() ? allocation_.allocate(budget, who, cap, m, false)
                                : allocate_capped_pro_rata(budget, weight, cap, ids);
}

// Winners of both sides in one order (score, then account id), each paying up to its
// capacity, as a sort of every holder by its current score would give; the kept queues give
// that order from their heads. Entries popped but not taken go back; see `parked` and
// `aside` (detail/adl_queue.hpp) for the ones that would stop every later haircut of the step.
void Haircuts::queue_haircut(MarketId m, i64 amount, std::vector<std::uint32_t>& who, std::vector<i64>& x) {
  const detail::AdlEntryAfter after = e_.adl_order();
  detail::KeptAdlQueue* queue[2] = {&e_.adl_queue(m, -1, cfg_.ranking, detail::QueueScope::Market),
                                    &e_.adl_queue(m, 1, cfg_.ranking)};
  detail::AdlEntry top[2];
  bool have[2];
  for (int k = 0; k < 2; ++k) have[k] = e_.adl_queue_pop(*queue[k], top[k], /*with_aside=*/false);
  detail::AdlEntries(&put_back)[2] = put_back_;
  for (detail::AdlEntries& v : put_back) v.clear();
  std::vector<std::pair<std::uint32_t, i64>>& takes = takes_;  // (holder-list index, amount)
  takes.clear();
  i64 left = amount;
  while (left > 0 && (have[0] || have[1])) {
    const int k = !have[0] ? 1 : !have[1] ? 0 : (after(top[0], top[1]) ? 1 : 0);
    const detail::AdlEntry entry = top[k];
    have[k] = e_.adl_queue_pop(*queue[k], top[k], /*with_aside=*/false);
    const std::uint32_t b = entry.account;
    if (!s_.eligible_winner(b)) {
      s_.hold_back(*queue[k], entry, put_back[k]);
      continue;
    }
    const i64 c = haircut_capacity(b, m);
    if (c <= 0) {
      detail::adl_heap_push(queue[k]->aside, entry, after);
      continue;
    }
    const i64 take = std::min(left, c);
    takes.push_back({e_.book().mslots()[e_.find_slot(b, m)], take});
    left -= take;
    put_back[k].push_back(entry);
  }
  for (int k = 0; k < 2; ++k) {
    if (have[k]) put_back[k].push_back(top[k]);
    for (const detail::AdlEntry& qe : put_back[k]) e_.adl_queue_push(*queue[k], qe);
  }
  // in the market's holder order, as the other policies report theirs
  std::sort(takes.begin(), takes.end());
  const std::vector<std::uint32_t>& holders = e_.book().holders(m);
  for (const auto& [slot, take] : takes) {
    who.push_back(holders[slot]);
    x.push_back(take);
  }
}

// Takes `amount` from winners in market m (haircut mode). Returns what was raised (less than
// amount only when every winner's capacity is exhausted). One call per market per round:
// the deficits of a round are socialized together, so pro-rata stays O(n) per round.
i64 Haircuts::haircut(MarketId m, i64 amount) {
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
    s_.touch(b);
    e_.add_to_balance(b, -x[i]);
    e_.note_changed(b);
    haircut_taken_[(static_cast<std::uint64_t>(b) << 32) | static_cast<std::uint32_t>(m)] += x[i];
    s_.mark_winner(b);
    s_.result.events.add(e_.step(), EventKind::Haircut, e_.book().ids()[b], m, 0, 0, -x[i], 0, -1);
    raised += x[i];
  }
  s_.result.totals.haircut_total += raised;
  return raised;
}

void Haircuts::resolve_round() {
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
      if (p.amount > 0 && fixed_theta()) p.amount -= s_.pay_from_fund(p.account, p.market, p.amount);
      if (p.amount > 0) {
        s_.result.events.add(e_.step(), EventKind::BadDebt, e_.book().ids()[p.account], -1, 0, 0, p.amount, 0, -1);
        s_.result.totals.bad_debt += p.amount;
      }
    }
  }
  pending_.clear();
}

void Haircuts::credit(std::uint32_t a, MarketId m, i64 amount) {
  s_.touch(a);
  e_.add_to_balance(a, amount);
  e_.note_changed(a);
  s_.result.events.add(e_.step(), EventKind::SocializedCredit, e_.book().ids()[a], m, 0, 0, amount, 0, -1);
}

}  // namespace deleverage
