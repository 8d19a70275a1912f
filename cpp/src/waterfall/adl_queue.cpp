// ADL ranking scores (docs/waterfall.md section 7), the per-(market, side) queue of
// opposite-side winners, and the queue policy's ADL closes.
#include "deleverage/detail/parallel.hpp"
#include "waterfall_run.hpp"

namespace deleverage {

namespace {
// Leverage is capped so that an account with no equity left still ranks finitely.
constexpr i128 kMaxLeverageScaled = i128{1'000'000} * kScoreScale;
}  // namespace

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

// Closes `lots` of account a's position in m against opposite-side winners taken from the
// ADL queue; the account receives `value` in total (signed like its position). Returns the
// lots closed.
i64 WaterfallRun::adl_close(std::uint32_t a, MarketId m, i64 lots, i64 value, i64 bk, i64 exec_price) {
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
  return apply_adl_takes(a, m, sign, lots, value, bk, exec_price, takes);
}

}  // namespace deleverage
