// ADL closes (docs/waterfall.md sections 5 and 6): the queue policy's closes against the kept
// queue, the other policies' shared allocation of a round's demand, and the ADL bounds that
// split what the winners pay between the bankrupt account and the fund.
#include "adl_closes.hpp"

#include "deleverage/water_fill.hpp"

namespace deleverage {

// Closes `lots` of account a's position in m against opposite-side winners taken from the
// kept ADL queue; the account receives `value` in total (signed like its position). Returns
// the lots closed. A popped winner the fills did not change goes back unchanged (one they
// changed is re-scored when the queue is next used). A popped account that is
// liquidatable itself is parked instead: only a change to that account (which re-scores it)
// or a mark change can make it eligible, and putting it back would make every later close
// of the step pop it again (a crash step quadratic in the liquidatable accounts).
i64 AdlCloses::close(std::uint32_t a, MarketId m, i64 lots, i64 value, i64 bk, i64 exec_price) {
  const std::uint32_t slot = e_.find_slot(a, m);
  const i64 q = e_.book().sizes()[slot];
  const int sign = q > 0 ? 1 : -1;
  std::vector<std::pair<std::uint32_t, i64>>& takes = takes_;  // (winner, lots)
  takes.clear();
  detail::KeptAdlQueue& queue =
      e_.adl_queue(m, -sign, cfg_.ranking, s_.whole_book ? detail::QueueScope::Book : detail::QueueScope::Side);
  i64 left = lots;
  detail::AdlEntries& put_back = put_back_;
  put_back.clear();
  detail::AdlEntry top;
  while (left > 0 && e_.adl_queue_pop(queue, top)) {
    if (!s_.eligible_winner(top.account)) {
      s_.hold_back(queue, top, put_back);
      continue;
    }
    const std::uint32_t winner_slot = e_.find_slot(top.account, m);
    // the fill reads its entry notional, and a winner closed out its place in the holder
    // list: request them now, so that they load while the next winners are popped
    __builtin_prefetch(e_.book().entries().data() + winner_slot);
    __builtin_prefetch(e_.book().mslots().data() + winner_slot);
    const i64 size = abs64(e_.book().sizes()[winner_slot]);
    const i64 take = std::min(left, size);
    takes.push_back({top.account, take});
    left -= take;
    put_back.push_back(top);
  }
  const i64 closed = apply_takes(a, m, sign, lots, value, bk, exec_price, takes);
  // a winner the fills changed is re-scored when the queue is next used: its old entry is dead
  for (const detail::AdlEntry& qe : put_back)
    if (e_.adl_entry_current(qe)) e_.adl_queue_push(queue, qe);
  return closed;
}

void AdlCloses::opposite_winners(std::uint32_t a, MarketId m, int sign, std::vector<std::uint32_t>& who,
                                 std::vector<i64>& w, std::vector<i64>& ids) {
  who.clear();
  w.clear();
  ids.clear();
  for (std::uint32_t b : e_.book().holders(m)) {
    if (!s_.eligible_winner(b) || b == a) continue;
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

void AdlCloses::run_round() {
  if (demands_.empty()) return;
  // one allocation per market and side (markets ascending, long bankrupt positions first);
  // within a group the demands keep their liquidation order
  std::vector<std::size_t> order(demands_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    const Demand &dx = demands_[x], &dy = demands_[y];
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
    std::vector<i64> x = allocation_.uses_kernel() ? allocation_.allocate(budget, who, w, m, true)
                                                   : allocate_capped_pro_rata(budget, w, w, ids);
    // hand the winners' lots (creation order) to the demands (liquidation order)
    std::size_t wi = 0;
    const MarketState& mk = e_.market_table()[static_cast<std::size_t>(m)];
    for (; g < end; ++g) {
      const Demand& d = demands_[order[g]];
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
      const i64 closed = apply_takes(d.account, m, d.sign, d.lots, d.value, d.bk, d.exec_price, takes);
      const i64 rest = d.lots - closed;
      if (rest > 0) {  // the executor takes what the winners could not
        const i64 cash = e_.market_table().value_money(mk, d.sign * rest, d.exec_price);
        s_.fill(d.account, m, -d.sign * rest, cash);
        s_.fill(s_.exec_account, m, d.sign * rest, -cash);
        s_.result.events.add(e_.step(), EventKind::LiquidationFill, e_.book().ids()[d.account], m,
                             e_.book().ids()[s_.exec_account], -d.sign * rest, cash, d.exec_price, -1, d.exec_price);
      }
    }
  }
  demands_.clear();
}

i64 AdlCloses::pay_limit(std::uint32_t b, MarketId m, i64 dq) const {
  const MarketState& mk = e_.market_table()[static_cast<std::size_t>(m)];
  const i128 after =
      static_cast<i128>(e_.book().hot()[b].balance) +
      e_.market_table().div_s().floor(e_.book().hot()[b].cache.u + e_.market_table().value_v(mk, dq, mk.mark));
  return clamp_i64(after - std::min<i64>(0, s_.equity(b)));
}

// ADL bounds (docs/waterfall.md section 5): each winner pays its share of `value`, but never
// more than pay_limit (no new bankrupt). The account is owed its share of `bk`: below it, the
// fund pays the gap if it can, then the same winner up to its limit (what is still missing
// stays with the account's settlement); above it, the excess goes to the fund, so a bankrupt
// account is never left with money it did not have.
i64 AdlCloses::apply_takes(std::uint32_t a, MarketId m, int sign, i64 lots, i64 value, i64 bk, i64 exec_price,
                           const std::vector<std::pair<std::uint32_t, i64>>& takes) {
  i64 closed = 0;
  for (const auto& t : takes) closed += t.second;
  if (closed == 0) return 0;
  if (closed < lots) {  // not enough winners
    value = static_cast<i64>(static_cast<i128>(value) * closed / lots);
    bk = static_cast<i64>(static_cast<i128>(bk) * closed / lots);
  }
  // split by lots, the last counterparty takes the remainder
  i64 assigned = 0, bk_assigned = 0, lots_done = 0;
  const MarketState& mk = e_.market_table()[static_cast<std::size_t>(m)];
  for (std::size_t i = 0; i < takes.size(); ++i) {
    const auto [b, x] = takes[i];
    lots_done += x;
    const bool last = i + 1 == takes.size();
    const i64 v = last ? value - assigned : static_cast<i64>(static_cast<i128>(value) * lots_done / closed) - assigned;
    const i64 owed =
        last ? bk - bk_assigned : static_cast<i64>(static_cast<i128>(bk) * lots_done / closed) - bk_assigned;
    assigned += v;
    bk_assigned += owed;
    const i64 limit = pay_limit(b, m, sign * x);
    i64 pay = std::min(v, limit);
    if (pay < owed) {
      const i64 from_fund = s_.pay_from_fund(a, m, owed - pay);
      pay += std::min(owed - pay - from_fund, limit - pay);
    }
    // the winner reduces its opposite position by x lots and pays `pay` (receives -pay)
    s_.fill(b, m, sign * x, -pay);
    s_.fill(a, m, -sign * x, pay);
    s_.adl_log.push_back({b, m});
    s_.mark_winner(b);
    const i64 px =
        clamp_i64(static_cast<i128>(abs64(pay)) * e_.market_table().scale() / (static_cast<i128>(x) * mk.pow10k));
    s_.result.events.add(e_.step(), EventKind::AdlClose, e_.book().ids()[b], m, e_.book().ids()[a], sign * x, -pay, px,
                         -1, exec_price);
    s_.result.totals.adl_notional += abs64(pay);
    ++s_.result.totals.adl_closes;
    if (pay > owed) {  // more than the bankruptcy value: the excess is the fund's
      const i64 excess = pay - owed;
      e_.add_to_balance(a, -excess);
      e_.fund().move(e_.step(), mk.pool, m, e_.book().ids()[a], excess, LedgerReason::LiquidationFee);
      s_.result.events.add(e_.step(), EventKind::LiquidationFee, e_.book().ids()[a], m, 0, 0, -excess, 0, mk.pool);
      s_.result.totals.fund_fees += excess;
    }
  }
  return closed;
}

}  // namespace deleverage
