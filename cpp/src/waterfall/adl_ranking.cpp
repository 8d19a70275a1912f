// The ADL indicator: every position's place in its side's queue, the 1-5 light exchanges
// show, and the loss it would take if the largest current deficit were deleveraged now.
#include <algorithm>
#include <numeric>
#include <unordered_map>

#include "deleverage/engine.hpp"

namespace deleverage {

namespace {
// The live entries of a kept queue (see `live`), best first (no re-scoring: the scores it holds).
template <class Live>
std::vector<detail::AdlEntry> ordered_entries(const detail::KeptAdlQueue& q, detail::AdlEntryAfter after, Live live) {
  std::vector<detail::AdlEntry> all;
  all.reserve(q.heap.size() + q.reserve.size() + q.parked.size() + q.aside.size());
  for (const auto* part : {&q.heap, &q.reserve, &q.parked, &q.aside})
    for (const detail::AdlEntry& x : *part)
      if (live(x)) all.push_back(x);
  std::sort(all.begin(), all.end(), [&](const detail::AdlEntry& x, const detail::AdlEntry& y) { return after(y, x); });
  return all;
}
}  // namespace

AdlRankingReport Engine::adl_ranking(MarketId m, Ranking ranking, DeficitSplit split) {
  const MarketState& mk = markets_.market_or_throw(m, "market", 0);
  if (mk.mark == 0 && !book_.holders(m).empty())
    throw InvalidInput("market '" + mk.spec.symbol + "' has open positions but no mark price; call set_marks first");
  revalue_moved_markets(std::vector<std::uint8_t>(markets_.size(), 0), nullptr, nullptr, /*collect=*/false);
  // rows in the market's holder order, filled from each side's queue
  const std::vector<std::uint32_t>& holders = book_.holders(m);
  const std::size_t n = holders.size();
  AdlRankingReport r;
  r.account.resize(n);
  r.side.resize(n);
  r.size.resize(n);
  r.score.resize(n);
  r.rank.resize(n);
  r.light.resize(n);
  r.expected_loss.assign(n, 0);
  std::vector<std::uint32_t> acc(n);
  std::vector<AccountMargin> margin(n);
  std::unordered_map<std::uint32_t, std::size_t> row;
  row.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t a = holders[i];
    const std::uint32_t s = find_slot(a, m);
    acc[i] = a;
    row[a] = i;
    r.account[i] = book_.ids()[a];
    r.size[i] = book_.sizes()[s];
    r.side[i] = book_.sizes()[s] > 0 ? 1 : -1;
    margin[i] = margin_from_sums(book_.hot()[a].balance, book_.hot()[a].cache);
  }
  std::vector<std::size_t> by_side[2];
  for (int side : {1, -1}) {
    std::vector<std::size_t>& order = by_side[side > 0 ? 1 : 0];
    const detail::KeptAdlQueue& q = adl_queue(m, side, ranking, detail::QueueScope::Market);
    for (const detail::AdlEntry& x : ordered_entries(q, adl_order(), [&](const detail::AdlEntry& e) {
           return adl_entry_current(e) && holds_side(e.account, m, side);
         })) {
      const std::size_t i = row.at(x.account);
      r.score[i] = x.score;
      order.push_back(i);
    }
  }
  for (int side : {1, -1}) {
    const std::vector<std::size_t>& order = by_side[side > 0 ? 1 : 0];
    const i64 count = static_cast<i64>(order.size());
    for (i64 k = 0; k < count; ++k) {
      r.rank[order[static_cast<std::size_t>(k)]] = k + 1;
      r.light[order[static_cast<std::size_t>(k)]] = static_cast<std::int8_t>(5 - (5 * k) / count);
    }
    // The largest deficit on the other side: the bankrupt position with the largest gap
    // between its mark value and its bankruptcy value (its share of the account's negative
    // equity, placed by `split` as the waterfall places it).
    i128 worst_gap = 0;
    i64 worst_lots = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (r.side[i] != -side || margin[i].equity >= 0) continue;
      i128 gap = 0;
      for (const EquityShare& x : equity_shares(acc[i], split))
        if (x.m == m) gap = -x.share;
      if (gap > worst_gap) {
        worst_gap = gap;
        worst_lots = r.size[i] < 0 ? -r.size[i] : r.size[i];
      }
    }
    i64 left = worst_lots;
    for (std::size_t i : order) {
      if (left == 0) break;
      if (margin[i].liquidatable) continue;  // the waterfall never deleverages an account it is liquidating
      const i64 lots = std::min(left, r.size[i] < 0 ? -r.size[i] : r.size[i]);
      r.expected_loss[i] = static_cast<i64>(floor_div(worst_gap * lots, worst_lots));
      left -= lots;
    }
  }
  return r;
}

AdlRank Engine::adl_rank(i64 account_id, MarketId m, Ranking ranking) {
  const std::uint32_t a = account_index_or_throw(account_id, "account", 0);
  const MarketState& mk = markets_.market_or_throw(m, "market", 0);
  const std::uint32_t s = find_slot(a, m);
  if (s == kNoSlot)
    throw InvalidInput("account: account " + std::to_string(account_id) + " holds no position in market '" +
                       mk.spec.symbol + "'");
  revalue_moved_markets(std::vector<std::uint8_t>(markets_.size(), 0), nullptr, nullptr, /*collect=*/false);
  AdlRank out;
  out.side = book_.sizes()[s] > 0 ? 1 : -1;
  const detail::KeptAdlQueue& q = adl_queue(m, out.side, ranking);
  // a current entry of an account still on this side (entries of accounts that left it stay
  // in the queue until popped)
  const auto live = [&](const detail::AdlEntry& x) {
    return adl_entry_current(x) && holds_side(x.account, m, out.side);
  };
  // the account's current entry, then one pass over the queue's entries (not the book)
  const detail::AdlEntry* mine = nullptr;
  for (const auto* part : {&q.heap, &q.reserve, &q.parked, &q.aside})
    for (const detail::AdlEntry& x : *part)
      if (x.account == a && live(x)) mine = &x;
  if (mine == nullptr)
    throw InvariantViolation("adl_rank: account " + std::to_string(account_id) + " is missing from its queue");
  out.score = mine->score;
  i64 before = 0;
  for (const auto* part : {&q.heap, &q.reserve, &q.parked, &q.aside})
    for (const detail::AdlEntry& x : *part) {
      if (!adl_order()(*mine, x) || !live(x)) continue;
      ++before;
    }
  for (const auto* part : {&q.heap, &q.reserve, &q.parked, &q.aside})
    for (const detail::AdlEntry& x : *part) out.side_count += live(x) ? 1 : 0;
  out.rank = before + 1;
  out.light = static_cast<std::int8_t>(5 - (5 * before) / out.side_count);
  return out;
}

}  // namespace deleverage
