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
  // equity and maintenance as margin_from_sums gives them (the initial margin is not needed:
  // this runs once per position of a side when a queue is refreshed)
  const Sums& c = acc_[a].cache;
  const i128 u = scale_s_ == 1 ? c.u : div_s_.floor(c.u);
  const i64 equity = to_i64_checked(static_cast<i128>(acc_[a].balance) + u, "equity");
  const i64 maintenance = to_i64_checked(div_sr_.ceil(c.mm), "maintenance margin");
  return adl_score(slot, ranking, acc_[a].balance, equity, maintenance);
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

// ------------------------------------------------------------------ the kept queue

void Engine::set_adl_refresh(AdlRefresh policy, i64 every) {
  if (policy != AdlRefresh::Exact && policy != AdlRefresh::Interval)
    throw InvalidInput("adl_refresh: unknown policy " + std::to_string(static_cast<int>(policy)));
  if (every < 1) throw InvalidInput("every: the refresh interval must be at least 1 mark update (got " + std::to_string(every) + ")");
  adl_refresh_ = policy;
  adl_refresh_every_ = every;
}

void Engine::drop_adl_queues() {
  for (detail::KeptAdlQueue& q : adl_queues_) q = detail::KeptAdlQueue{};
}

void Engine::adl_queue_push(detail::KeptAdlQueue& q, const detail::AdlEntry& e) {
  q.heap.push_back(e);
  std::push_heap(q.heap.begin(), q.heap.end(), detail::AdlEntryAfter{});
}

// Moves the best `next_select` entries of the reserve into the heap: a partial selection,
// linear in the reserve, instead of sorting the side. The next selection takes twice as many,
// so a queue emptied to its end costs O(n) selections in total.
void Engine::select_adl_head(detail::KeptAdlQueue& q) {
  const std::size_t n = q.reserve.size();
  if (n == 0) return;
  const std::size_t k = std::min(n, std::max<std::size_t>(q.next_select, 64));
  q.next_select = 2 * k;
  // the k best go to [n - k, n); q.reserve[n - k] is the worst of them
  std::nth_element(q.reserve.begin(), q.reserve.begin() + static_cast<std::ptrdiff_t>(n - k), q.reserve.end(), detail::AdlEntryAfter{});
  q.threshold = q.reserve[n - k];
  for (std::size_t i = n - k; i < n; ++i) adl_queue_push(q, q.reserve[i]);
  q.reserve.resize(n - k);
}

// One pass over the market's holders: every position on the side is scored (in parallel,
// in chunks of the holder list), then only the head is selected.
void Engine::refresh_adl_queue(detail::KeptAdlQueue& q, MarketId m, int side, Ranking ranking) {
  const MarketState& mk = markets_[static_cast<std::size_t>(m)];
  const std::size_t n = mk.accounts.size();
  constexpr std::size_t kChunk = 16384;
  const std::size_t chunks = std::max<std::size_t>(1, (n + kChunk - 1) / kChunk);
  std::vector<std::vector<detail::AdlEntry>> part(chunks);
  const auto score_chunk = [&](std::size_t c) {
    std::vector<detail::AdlEntry>& out = part[c];
    out.reserve(kChunk);
    for (std::size_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
      const std::uint32_t a = mk.accounts[i];
      const std::uint32_t s = find_slot(a, m);
      if ((pos_size_[s] > 0) != (side > 0)) continue;
      out.push_back(detail::AdlEntry{adl_score(a, s, ranking), acc_id_[a], a, 0});
    }
  };
  detail::parallel_for_dynamic(chunks, threads_, 1, [&](std::size_t b, std::size_t e) {
    for (std::size_t c = b; c < e; ++c) score_chunk(c);
  });
  std::vector<std::size_t> offset(chunks + 1, 0);
  for (std::size_t c = 0; c < chunks; ++c) offset[c + 1] = offset[c] + part[c].size();
  q = detail::KeptAdlQueue{};
  q.reserve.resize(offset[chunks]);
  detail::parallel_for_dynamic(chunks, threads_, 4, [&](std::size_t b, std::size_t e) {
    for (std::size_t c = b; c < e; ++c) std::copy(part[c].begin(), part[c].end(), q.reserve.begin() + static_cast<std::ptrdiff_t>(offset[c]));
  });
  q.built = true;
  q.ranking = static_cast<std::uint8_t>(ranking);
  q.marks_epoch = marks_epoch_;
  q.market_updates = mk.mark_updates;
  q.log_pos = changed_base_ + changed_.size();
  q.next_select = 256;
  select_adl_head(q);
  if (!track_changes_) {  // from now on account changes are noted, without allocating
    track_changes_ = true;
    changed_.reserve(kChangeLogCap);
  }
}

// Re-scores the accounts changed since the queue's last use: each gets a new entry (if it
// holds this side) with a new stamp, which retires its older entries.
void Engine::catch_up_adl_queue(detail::KeptAdlQueue& q, MarketId m, int side, Ranking ranking) {
  const std::uint64_t end = changed_base_ + changed_.size();
  if (q.log_pos == end) return;
  std::vector<std::uint32_t> who(changed_.begin() + static_cast<std::ptrdiff_t>(q.log_pos - changed_base_), changed_.end());
  q.log_pos = end;
  std::sort(who.begin(), who.end());
  who.erase(std::unique(who.begin(), who.end()), who.end());
  for (std::uint32_t a : who) {
    if (a >= acc_id_.size()) continue;  // created by a deposit that was rolled back
    const std::uint32_t stamp = q.next_stamp++;
    q.restamped[a] = stamp;
    const std::uint32_t s = find_slot(a, m);
    if (s == kNoSlot || (pos_size_[s] > 0) != (side > 0)) continue;
    adl_queue_push(q, detail::AdlEntry{adl_score(a, s, ranking), acc_id_[a], a, stamp});
  }
}

detail::KeptAdlQueue& Engine::adl_queue(MarketId m, int side, Ranking ranking) {
  if (adl_queues_.size() < 2 * markets_.size()) adl_queues_.resize(2 * markets_.size());
  detail::KeptAdlQueue& q = adl_queues_[2 * static_cast<std::size_t>(m) + (side > 0 ? 1 : 0)];
  const MarketState& mk = markets_[static_cast<std::size_t>(m)];
  bool stale = !q.built || q.ranking != static_cast<std::uint8_t>(ranking) || q.log_pos < changed_base_;
  if (!stale) {
    if (adl_refresh_ == AdlRefresh::Exact)
      stale = q.marks_epoch != marks_epoch_;
    else
      stale = mk.mark_updates - q.market_updates >= static_cast<std::uint64_t>(adl_refresh_every_);
  }
  // superseded entries pile up with re-scorings: past twice the side, start over
  if (!stale && q.heap.size() + q.reserve.size() > 2 * mk.accounts.size() + 4096) stale = true;
  if (stale)
    refresh_adl_queue(q, m, side, ranking);
  else
    catch_up_adl_queue(q, m, side, ranking);
  return q;
}

bool Engine::adl_queue_pop(detail::KeptAdlQueue& q, MarketId m, int side, detail::AdlEntry& out) {
  for (;;) {
    // the heap's top is the head only while no reserve entry can come before it
    if (!q.reserve.empty() && (q.heap.empty() || detail::AdlEntryAfter{}(q.heap.front(), q.threshold))) {
      select_adl_head(q);
      continue;
    }
    if (q.heap.empty()) return false;
    std::pop_heap(q.heap.begin(), q.heap.end(), detail::AdlEntryAfter{});
    out = q.heap.back();
    q.heap.pop_back();
    if (!q.current(out)) continue;  // superseded by a re-scoring
    const std::uint32_t s = find_slot(out.account, m);
    if (s == kNoSlot || (pos_size_[s] > 0) != (side > 0)) continue;
    return true;
  }
}

// ------------------------------------------------------------------ queue ADL closes

// Closes `lots` of account a's position in m against opposite-side winners taken from the
// kept ADL queue; the account receives `value` in total (signed like its position). Returns
// the lots closed. Every popped entry goes back unchanged: one whose account the fills change
// is superseded when the queue is next used (its re-scoring), the others keep their place.
i64 WaterfallRun::adl_close(std::uint32_t a, MarketId m, i64 lots, i64 value, i64 bk, i64 exec_price) {
  const std::uint32_t slot = e_.find_slot(a, m);
  const i64 q = e_.pos_size_[slot];
  const int sign = q > 0 ? 1 : -1;
  std::vector<std::pair<std::uint32_t, i64>> takes;  // (winner, lots)
  detail::KeptAdlQueue& queue = e_.adl_queue(m, -sign, cfg_.ranking);
  i64 left = lots;
  std::vector<detail::AdlEntry> put_back;
  detail::AdlEntry top;
  while (left > 0 && e_.adl_queue_pop(queue, m, -sign, top)) {
    if (!eligible_winner(top.account)) {
      put_back.push_back(top);
      continue;
    }
    const i64 size = abs64(e_.pos_size_[e_.find_slot(top.account, m)]);
    const i64 take = std::min(left, size);
    takes.push_back({top.account, take});
    left -= take;
    put_back.push_back(top);
  }
  for (const detail::AdlEntry& qe : put_back) e_.adl_queue_push(queue, qe);
  return apply_adl_takes(a, m, sign, lots, value, bk, exec_price, takes);
}

}  // namespace deleverage
