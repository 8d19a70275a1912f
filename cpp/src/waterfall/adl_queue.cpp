// ADL ranking scores (docs/waterfall.md section 7) and the engine's kept per-(market, side)
// queues of opposite-side winners (the queue policy's closes are in adl_closes.cpp).
#include <span>
#include <tuple>

#include "deleverage/detail/parallel.hpp"
#include "step_state.hpp"

namespace deleverage {

namespace {
// Leverage is capped so that an account with no equity left still ranks finitely.
constexpr i128 kMaxLeverageScaled = i128{1'000'000} * kScoreScale;
// Changed accounts ahead of the one a catch-up re-scores whose lines it prefetches.
constexpr std::size_t kCatchUpPrefetch = 16;
// Changed accounts up to which a catch-up finds repeats by a look back (see catch_up_adl_queues).
constexpr std::size_t kShortCatchUp = 32;
// Entries ahead of a reserve's end whose line a push claims (see adl_queue_push).
constexpr std::size_t kReservePrefetch = 8;
// A heap this small is not worth a purge of its superseded entries (see purge_heap).
constexpr std::size_t kHeapPurgeMin = 64;

// The last line of account a's sizes and entries, where the callers prefetch the first: the
// block of an account in ten markets spans two lines of each column, and a score reads every
// position of the block.
void prefetch_block_end(const detail::Book& book, std::uint32_t a) {
  const std::uint32_t count = book.hot()[a].count;
  if (count == 0) return;
  const std::uint32_t last = book.hot()[a].start + count - 1;
  __builtin_prefetch(book.sizes().data() + last);
  __builtin_prefetch(book.entries().data() + last);
}
}  // namespace

std::pair<i64, i64> Engine::equity_and_maintenance(std::uint32_t a) const {
  // as margin_from_sums gives them (the initial margin is not needed: this runs once per
  // position of a side when a queue is refreshed)
  const Sums& c = book_.hot()[a].cache;
  const i128 u = markets_.scale() == 1 ? c.u : markets_.div_s().floor(c.u);
  const i128 equity = static_cast<i128>(book_.hot()[a].balance) + u;
  const i128 maintenance = markets_.div_sr().ceil(c.mm);
  // an account a waterfall step pushed out of the representable range, named (the step rolls back)
  if (!fits_i64(equity) || !fits_i64(maintenance)) [[unlikely]]
    throw_unrepresentable(a, "ADL ranking");
  return {static_cast<i64>(equity), static_cast<i64>(maintenance)};
}

i64 Engine::adl_score(std::uint32_t a, std::uint32_t slot, Ranking ranking, bool* liquidatable) const {
  const auto [equity, maintenance] = equity_and_maintenance(a);
  if (liquidatable != nullptr) *liquidatable = equity < maintenance;
  return adl_score(slot, ranking, book_.hot()[a].balance, equity, maintenance, book_.hot()[a].count == 1);
}

// contribution(mk, q, 0, mk.mark).mm for the position's value at the mark, |q * mark * 10^k|,
// which the score has at hand: the same tier and product without the value and initial terms.
i128 Engine::position_maintenance(const MarketState& mk, i128 abs_value) const {
  std::size_t j = 0;
  while (j + 1 < mk.tiers.size() && abs_value > mk.caps_v[j]) ++j;
  const Tier& t = mk.tiers[j];
  return abs_value * t.maintenance_rate - t.maintenance_deduction * markets_.scale();
}

// The score of one position given its account's balance, equity and maintenance (money).
// Integer arithmetic in units of kScoreScale; see docs/waterfall.md section 7.
i64 Engine::adl_score(std::uint32_t slot, Ranking ranking, i64 balance, i64 equity, i64 maintenance,
                      bool only_position) const {
  const MarketState& mk = markets_[static_cast<std::size_t>(book_.markets()[slot])];
  const i64 q = book_.sizes()[slot], E = book_.entries()[slot];
  const i128 value = static_cast<i128>(q) * mk.mark * mk.pow10k;
  const i128 mark_value = markets_.scale() == 1 ? value : markets_.div_s().floor(value);
  const i128 u = mark_value - E;  // floor(u_V / S): E * S is a multiple of S
  const i128 notional = mark_value < 0 ? -mark_value : mark_value;
  const i128 abs_entry = std::max<i128>(1, abs64(E));
  switch (ranking) {
    case Ranking::BitMEX: {
      // pnl% x leverage when in profit, pnl% / leverage otherwise; leverage = notional over
      // the position's share of the account equity (its maintenance share)
      const i128 pnl = floor_div_fast(u * kScoreScale, abs_entry);
      i128 share = equity;  // an account's only position carries all of its maintenance
      if (maintenance > 0 && !only_position) {
        const i128 mm_i = markets_.div_sr().ceil(position_maintenance(mk, value < 0 ? -value : value));
        share = trunc_div(static_cast<i128>(equity) * mm_i, maintenance);
      }
      i128 lev =
          share > 0 ? std::min(kMaxLeverageScaled, trunc_div(notional * kScoreScale, share)) : kMaxLeverageScaled;
      lev = std::max<i128>(lev, 1);
      return clamp_i64(pnl > 0 ? trunc_div(pnl * lev, kScoreScale) : trunc_div(pnl * kScoreScale, lev));
    }
    case Ranking::Binance: {
      // LeveragePnl = max(0, upnl) / max(1, wallet balance) x maintenance / (wallet + upnl)
      const i128 one_quote = pow10_i64(markets_.money_decimals());
      const i128 pnl = trunc_div(std::max<i128>(0, u) * kScoreScale, std::max<i128>(one_quote, balance));
      const i128 ratio = equity > 0 ? trunc_div(static_cast<i128>(maintenance) * kScoreScale, equity) : 0;
      return clamp_i64(
          trunc_div(std::min<i128>(pnl, kMaxLeverageScaled) * std::min<i128>(ratio, kMaxLeverageScaled), kScoreScale));
    }
    case Ranking::Hyperliquid: {
      // (mark / entry) x (notional / account equity), mark/entry inverted for a short
      const i128 price_ratio = q > 0 ? trunc_div(notional * kScoreScale, abs_entry)
                                     : trunc_div(abs_entry * kScoreScale, std::max<i128>(1, notional));
      const i128 lev =
          equity > 0 ? std::min(kMaxLeverageScaled, trunc_div(notional * kScoreScale, equity)) : kMaxLeverageScaled;
      return clamp_i64(trunc_div(std::min<i128>(price_ratio, kMaxLeverageScaled) * lev, kScoreScale));
    }
  }
  return 0;
}

// ------------------------------------------------------------------ the kept queue

void Engine::set_adl_refresh(AdlRefresh policy, i64 every) {
  if (policy != AdlRefresh::Exact && policy != AdlRefresh::Interval)
    throw InvalidInput("adl_refresh: unknown policy " + std::to_string(static_cast<int>(policy)));
  if (every < 1)
    throw InvalidInput("every: the refresh interval must be at least 1 mark update (got " + std::to_string(every) +
                       ")");
  adl_refresh_ = policy;
  adl_refresh_every_ = every;
  catch_up_.live_checked_epoch = ~std::uint64_t{0};
}

void Engine::drop_adl_queues() {
  for (detail::KeptAdlQueue& q : adl_queues_) q = detail::KeptAdlQueue{};
  catch_up_.live.clear();
}

// An entry after the threshold joins the unsorted reserve (O(1)); the heap keeps only the
// head, so that pops stay cheap however many accounts are re-scored.
void Engine::adl_queue_push(detail::KeptAdlQueue& q, const detail::AdlEntry& e) {
  const detail::AdlEntryAfter after = adl_order();
  if (after(e, q.threshold)) {
    // The reserve's end was last written long ago (a refresh, a purge): claim the lines a few
    // pushes ahead, or each new line stalls the push that first writes it.
    const std::size_t n = q.reserve.size();
    if (n + kReservePrefetch < q.reserve.capacity()) __builtin_prefetch(q.reserve.data() + n + kReservePrefetch, 1);
    q.reserve.push_back(e);
    return;
  }
  detail::adl_heap_push(q.heap, e, after);
}

// Moves the best entries of the reserve into the heap: a partial selection, linear in the
// reserve, instead of sorting the side. The first selection after a refresh takes 256 (one
// liquidation needs a few winners); each next one twice the last, up to an eighth of the
// reserve, so the heap stays small enough to be cheap to pop while a queue emptied to its end
// costs O(log n) selections and then at most eight times its size (the reserve shrinks
// geometrically).
void Engine::select_adl_head(detail::KeptAdlQueue& q) {
  const std::size_t n = q.reserve.size();
  if (n == 0) return;
  const std::size_t k = std::min(n, std::max<std::size_t>(256, std::min(q.next_select, n / 8)));
  q.next_select = 2 * k;
  const detail::AdlEntryAfter after = adl_order();
  // The k best go to [n - k, n); q.reserve[n - k] is the worst of them. For a small head
  // (k below a sixteenth of n), a pivot from a sample first moves a few times k candidates to
  // the end in one pass, so that the exact selection runs on those only: one streaming pass
  // over a reserve that outgrows the cache instead of the several of a selection over all of it.
  std::size_t from = 0;
  if (k * 16 < n) {
    constexpr std::size_t kSample = 4096;
    std::vector<detail::AdlEntry> sample(kSample);
    for (std::size_t i = 0; i < kSample; ++i) sample[i] = q.reserve[i * (n / kSample)];
    // expected k * kSample / n of the sample are in the head; take four times that (+16)
    const std::size_t r = std::min(kSample - 1, 4 * k * kSample / n + 16);
    std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(kSample - 1 - r), sample.end(),
                     after);
    const detail::AdlEntry pivot = sample[kSample - 1 - r];
    // entries not after the pivot (the pivot and better) to the end
    const auto mid =
        std::partition(q.reserve.begin(), q.reserve.end(), [&](const detail::AdlEntry& x) { return after(x, pivot); });
    const std::size_t candidates = static_cast<std::size_t>(q.reserve.end() - mid);
    if (candidates >= k) from = n - candidates;  // else (an unlucky sample) select over all
  }
  std::nth_element(q.reserve.begin() + static_cast<std::ptrdiff_t>(from),
                   q.reserve.begin() + static_cast<std::ptrdiff_t>(n - k), q.reserve.end(), after);
  q.threshold = detail::AdlKey{q.reserve[n - k].score, book_.ids()[q.reserve[n - k].account]};
  q.heap.insert(q.heap.end(), q.reserve.begin() + static_cast<std::ptrdiff_t>(n - k), q.reserve.end());
  detail::adl_heap_make(q.heap, after);
  q.reserve.resize(n - k);
}

// One pass over the market's holders refreshes the queues in `qs` ([0] shorts, [1] longs;
// a null one is left as it is): every position on a refreshed side is scored (in parallel,
// in chunks of the holder list), then only each head is selected. Both sides in one pass
// share its cache misses (the holder's block and position are read to learn the side). The
// queues' buffers and a scratch buffer are reused from one refresh to the next: a refresh
// after a mark move allocates nothing once the sides have been seen.
void Engine::refresh_adl_queues(detail::KeptAdlQueue* const (&qs)[2], MarketId m, Ranking ranking) {
  const std::vector<std::uint32_t>& holders = book_.holders(m);
  const std::size_t n = holders.size();
  constexpr std::size_t kChunk = 16384;
  const std::size_t chunks = std::max<std::size_t>(1, (n + kChunk - 1) / kChunk);
  detail::AdlEntries& scratch = refresh_scratch_;  // side k's entries in [k * n, (k + 1) * n)
  if (scratch.size() < 2 * n) scratch.resize(2 * n);
  // Chunk c writes only its own region of each side: the winners from its start, the entries
  // of liquidatable accounts from its end (parked at once, as in catch_up_adl_queues: in a
  // crash they rank first and each would cost a pop).
  std::vector<std::size_t> count(2 * chunks, 0), parked(2 * chunks, 0);
  detail::parallel_for_dynamic(chunks, threads_, 1, [&](std::size_t b, std::size_t e) {
    for (std::size_t c = b; c < e; ++c) {
      const std::size_t begin = c * kChunk, end = std::min(n, (c + 1) * kChunk);
      std::size_t k[2] = {begin, n + begin}, j[2] = {end, n + end};
      for (std::size_t i = begin; i < end; ++i) {
        const std::uint32_t a = holders[i];
        const std::uint32_t s = find_slot(a, m);
        const std::size_t side = book_.sizes()[s] > 0 ? 1 : 0;
        if (qs[side] == nullptr) continue;
        bool liquidatable = false;
        const detail::AdlEntry entry{adl_score(a, s, ranking, &liquidatable), a, account_version(a)};
        if (liquidatable)
          scratch[--j[side]] = entry;
        else
          scratch[k[side]++] = entry;
      }
      for (std::size_t side = 0; side < 2; ++side) {
        count[2 * c + side] = k[side] - (side * n + begin);
        parked[2 * c + side] = side * n + end - j[side];
      }
    }
  });
  for (std::size_t side = 0; side < 2; ++side) {
    if (qs[side] == nullptr) continue;
    detail::KeptAdlQueue& q = *qs[side];
    std::vector<std::size_t> offset(chunks + 1, 0);
    for (std::size_t c = 0; c < chunks; ++c) offset[c + 1] = offset[c] + count[2 * c + side];
    q.reset();
    q.reserve.resize(offset[chunks]);
    detail::parallel_for_dynamic(chunks, threads_, 4, [&](std::size_t b, std::size_t e) {
      for (std::size_t c = b; c < e; ++c) {
        const auto from = scratch.begin() + static_cast<std::ptrdiff_t>(side * n + c * kChunk);
        std::copy(from, from + static_cast<std::ptrdiff_t>(count[2 * c + side]),
                  q.reserve.begin() + static_cast<std::ptrdiff_t>(offset[c]));
      }
    });
    for (std::size_t c = 0; c < chunks; ++c) {
      const auto end = scratch.begin() + static_cast<std::ptrdiff_t>(side * n + std::min(n, (c + 1) * kChunk));
      q.parked.insert(q.parked.end(), end - static_cast<std::ptrdiff_t>(parked[2 * c + side]), end);
    }
    q.built = true;
    q.ranking = static_cast<std::uint8_t>(ranking);
    q.marks_epoch = marks_epoch_;
    q.market_updates = markets_[static_cast<std::size_t>(m)].mark_updates;
    q.parked_epoch = marks_epoch_;
    select_adl_head(q);
  }
}

namespace {
// Refreshes the queues `qs` (index 2m + side; null: left as it is) of several markets in one
// pass over the accounts: each account's block is read once, in order, and its equity computed
// once, where a pass per market reads every holder's block and equity once per market.
void refresh_queues_by_account(Engine& e, std::span<detail::KeptAdlQueue* const> qs, Ranking ranking,
                               std::uint64_t marks_epoch) {
  const detail::Book& book = e.book();
  const std::size_t n = book.ids().size(), nq = qs.size();
  constexpr std::size_t kChunk = 4096;  // accounts
  const std::size_t chunks = std::max<std::size_t>(1, (n + kChunk - 1) / kChunk);
  // per chunk and queue: the winners, then the entries of liquidatable accounts (parked at
  // once, as in catch_up_adl_queues: in a crash they rank first and each would cost a pop)
  std::vector<std::vector<detail::AdlEntry>> out(chunks * nq * 2);
  detail::parallel_for_dynamic(chunks, e.threads(), 1, [&](std::size_t b, std::size_t end) {
    for (std::size_t c = b; c < end; ++c) {
      std::vector<detail::AdlEntry>* mine = out.data() + c * nq * 2;
      for (std::uint32_t a = static_cast<std::uint32_t>(c * kChunk); a < std::min(n, (c + 1) * kChunk); ++a) {
        const std::uint32_t first = book.hot()[a].start, count = book.hot()[a].count;
        bool have_terms = false;
        i64 equity = 0, maintenance = 0;
        for (std::uint32_t s = first; s < first + count; ++s) {
          const std::size_t i = 2 * static_cast<std::size_t>(book.markets()[s]) + (book.sizes()[s] > 0 ? 1 : 0);
          if (qs[i] == nullptr) continue;
          if (!have_terms) {
            std::tie(equity, maintenance) = e.equity_and_maintenance(a);
            have_terms = true;
          }
          const i64 score = e.adl_score(s, ranking, book.hot()[a].balance, equity, maintenance, count == 1);
          mine[2 * i + (equity < maintenance ? 1 : 0)].push_back(detail::AdlEntry{score, a, e.account_version(a)});
        }
      }
    }
  });
  detail::parallel_for_dynamic(nq, e.threads(), 1, [&](std::size_t b, std::size_t end) {
    for (std::size_t i = b; i < end; ++i) {
      if (qs[i] == nullptr) continue;
      detail::KeptAdlQueue& q = *qs[i];
      q.reset();
      for (std::size_t c = 0; c < chunks; ++c) {
        const std::vector<detail::AdlEntry>& winners = out[(c * nq + i) * 2];
        const std::vector<detail::AdlEntry>& parked = out[(c * nq + i) * 2 + 1];
        q.reserve.insert(q.reserve.end(), winners.begin(), winners.end());
        q.parked.insert(q.parked.end(), parked.begin(), parked.end());
      }
      q.built = true;
      q.ranking = static_cast<std::uint8_t>(ranking);
      q.marks_epoch = marks_epoch;
      q.market_updates = e.market_table()[i / 2].mark_updates;
      q.parked_epoch = marks_epoch;
      e.select_adl_head(q);
    }
  });
}
}  // namespace

// Whether a built queue must be rebuilt before its next use for the refresh policy (marks);
// the other reasons (never built, another ranking, too many superseded entries) are checked
// where the queue is used.
bool Engine::adl_queue_marks_stale(const detail::KeptAdlQueue& q, MarketId m) const {
  if (adl_refresh_ == AdlRefresh::Exact) return q.marks_epoch != marks_epoch_;
  return markets_[static_cast<std::size_t>(m)].mark_updates - q.market_updates >=
         static_cast<std::uint64_t>(adl_refresh_every_);
}

// Re-scores every account changed since the last catch-up, once, in every kept queue it is in
// that is still fresh (a stale queue is rebuilt when next used): each gets a new entry with
// its new version, which retires its older entries. One visit per account serves all its
// markets, instead of one visit per market as each queue is used (in a crash most winners
// hold several markets and are re-scored in each of them after every ADL close).
void Engine::catch_up_adl_queues() {
  const std::uint64_t end = changes_.base + changes_.accounts.size();
  if (catch_up_.seen_to == end) return;
  if (catch_up_.seen_to < changes_.base) {  // the log forgot changes no queue has seen: start over
    for (detail::KeptAdlQueue& q : adl_queues_) q.built = false;
    catch_up_.live_checked_epoch = ~std::uint64_t{0};
    catch_up_.seen_to = end;
    return;
  }
  // the queues taking entries: built and fresh (a stale one leaves the list until rebuilt).
  // A crash step catches up before each of its ADL closes with the marks unchanged: the list
  // is checked once, not per close (a queue refreshed since was listed fresh).
  if (catch_up_.live_checked_epoch != marks_epoch_) {
    std::size_t kept = 0;
    for (const std::uint32_t i : catch_up_.live) {
      detail::KeptAdlQueue& q = adl_queues_[i];
      q.catch_up = q.built && !adl_queue_marks_stale(q, static_cast<MarketId>(i / 2));
      if (q.catch_up)
        catch_up_.live[kept++] = i;
      else
        q.listed = false;
    }
    catch_up_.live.resize(kept);
    catch_up_.live_checked_epoch = marks_epoch_;
  }
  if (catch_up_.live.empty()) {
    catch_up_.seen_to = end;
    return;
  }
  const std::vector<std::uint32_t>& log = changes_.accounts;
  const std::size_t n = log.size(), first = static_cast<std::size_t>(catch_up_.seen_to - changes_.base);
  // A crash step catches up before each ADL close, over the few winners of the close before:
  // an account repeated among those is found by looking back over them (in cache), where
  // the per-account marks of catch_up_.seen cost a cache miss per account in a large book.
  const bool short_run = n - first <= kShortCatchUp;
  if (!short_run) {
    if (++catch_up_.round == 0) {  // the marks below could repeat: start them over
      std::fill(catch_up_.seen.begin(), catch_up_.seen.end(), 0);
      catch_up_.round = 1;
    }
    if (catch_up_.seen.size() < book_.ids().size()) catch_up_.seen.resize(book_.ids().size(), 0);
  } else {
    // The accounts were just changed (their lines are in cache) but a score reads every
    // position of the block, most of it not touched by the change: request all of those
    // lines first, so that their misses overlap instead of following one another.
    for (std::size_t i = first; i < n; ++i) {
      const std::uint32_t a = log[i];
      if (a >= book_.ids().size()) continue;
      prefetch_block(a);
      __builtin_prefetch(book_.entries().data() + book_.hot()[a].start);
      prefetch_block_end(book_, a);
    }
  }
  for (std::size_t i = first; i < n; ++i) {
    // The changed accounts are scattered: prefetch ahead so their cache misses overlap.
    if (i + kCatchUpPrefetch < n) {
      const std::uint32_t ahead = log[i + kCatchUpPrefetch];
      if (ahead < book_.ids().size()) {
        prefetch_account(ahead);
        // (a short run leaves catch_up_.seen unsized: no element to point at)
        if (!short_run) __builtin_prefetch(catch_up_.seen.data() + ahead);
        if (ahead < account_version_.size()) __builtin_prefetch(&account_version_[ahead]);
      }
    }
    if (i + kCatchUpPrefetch / 2 < n && log[i + kCatchUpPrefetch / 2] < book_.ids().size()) {
      const std::uint32_t ahead = log[i + kCatchUpPrefetch / 2];
      prefetch_block(ahead);
      __builtin_prefetch(book_.entries().data() + book_.hot()[ahead].start);  // the score reads the entry too
      prefetch_block_end(book_, ahead);
    }
    const std::uint32_t a = log[i];
    if (a >= book_.ids().size()) continue;  // rolled back
    if (short_run) {
      const auto here = log.begin() + static_cast<std::ptrdiff_t>(i);
      if (std::find(log.begin() + static_cast<std::ptrdiff_t>(first), here, a) != here) continue;  // already done
    } else {
      if (catch_up_.seen[a] == catch_up_.round) continue;  // already done
      catch_up_.seen[a] = catch_up_.round;
    }
    // an account that left a side keeps its old entries there, superseded by the new version
    const std::uint32_t b = book_.hot()[a].start, e = b + book_.hot()[a].count;
    if (b == e) continue;
    // the account's terms of the scores once, for all its positions (as adl_score(a, slot) has them)
    const auto [equity, maintenance] = equity_and_maintenance(a);
    const std::uint32_t version = account_version(a);
    // A liquidatable account is no winner: a pop would only park its entry (see `parked`),
    // so it is parked at once. In a crash the accounts waiting for their own liquidation
    // rank first and are re-scored often; in the heap each would cost a pop.
    const bool liquidatable = equity < maintenance;
    for (std::uint32_t s = b; s < e; ++s) {
      detail::KeptAdlQueue& q =
          adl_queues_[2 * static_cast<std::size_t>(book_.markets()[s]) + (book_.sizes()[s] > 0 ? 1 : 0)];
      if (!q.catch_up) continue;
      const i64 score =
          adl_score(s, static_cast<Ranking>(q.ranking), book_.hot()[a].balance, equity, maintenance, e - b == 1);
      if (liquidatable)
        q.parked.push_back(detail::AdlEntry{score, a, version});
      else
        adl_queue_push(q, detail::AdlEntry{score, a, version});
      ++q.superseded;
    }
  }
  catch_up_.seen_to = end;
}

detail::KeptAdlQueue& Engine::adl_queue(MarketId m, int side, Ranking ranking, detail::QueueScope scope) {
  ensure_adl_queues();
  if (!track_changes_) {  // from now on account changes are noted
    track_changes_ = true;
    catch_up_.seen_to = changes_.base + changes_.accounts.size();
  }
  // Every fresh queue is current up to the end of the log from here on, so a queue rebuilt
  // below starts there too.
  catch_up_adl_queues();
  const std::size_t index = 2 * static_cast<std::size_t>(m) + (side > 0 ? 1 : 0);
  detail::KeptAdlQueue& q = adl_queues_[index];
  bool stale = !q.built || q.ranking != static_cast<std::uint8_t>(ranking) || adl_queue_marks_stale(q, m);
  // superseded entries pile up with re-scorings: past four times the market's holders, start over
  if (!stale &&
      q.heap.size() + q.reserve.size() + q.parked.size() + q.aside.size() > 4 * book_.holders(m).size() + 4096)
    stale = true;
  if (stale) {
    // The queues of `scope` that are unbuilt or behind the marks are refreshed in the same pass
    // (at their turn they would be refreshed anyway).
    std::vector<detail::KeptAdlQueue*> qs(adl_queues_.size(), nullptr);
    std::size_t markets_refreshed = 0;
    for (std::size_t i = 0; i < qs.size(); ++i) {
      const detail::KeptAdlQueue& o = adl_queues_[i];
      const bool in_scope =
          scope == detail::QueueScope::Book || (scope == detail::QueueScope::Market && i / 2 == index / 2);
      if (i == index || (in_scope && (!o.built || (o.ranking == static_cast<std::uint8_t>(ranking) &&
                                                   adl_queue_marks_stale(o, static_cast<MarketId>(i / 2))))))
        qs[i] = &adl_queues_[i];
      if (i % 2 == 1 && (qs[i - 1] != nullptr || qs[i] != nullptr)) ++markets_refreshed;
    }
    if (markets_refreshed > 1) {
      refresh_queues_by_account(*this, qs, ranking, marks_epoch_);
    } else {
      detail::KeptAdlQueue* const pair[2] = {qs[index & ~std::size_t{1}], qs[index | 1]};
      refresh_adl_queues(pair, m, ranking);
    }
    for (std::size_t i = 0; i < qs.size(); ++i) {
      if (qs[i] == nullptr) continue;
      if (!adl_queues_[i].listed) {
        adl_queues_[i].listed = true;
        catch_up_.live.push_back(static_cast<std::uint32_t>(i));
      }
      adl_queues_[i].catch_up = true;
    }
    return q;
  }
  if (2 * q.superseded > q.heap.size() + q.reserve.size()) purge_superseded(q);
  if (q.parked_epoch != marks_epoch_) {  // the marks moved: a parked account may be eligible again
    q.parked_epoch = marks_epoch_;
    for (const auto* part : {&q.parked, &q.aside})
      for (const detail::AdlEntry& x : *part)
        if (adl_entry_current(x)) adl_queue_push(q, x);
    q.parked.clear();
    q.aside.clear();
  }
  return q;
}

// Drops every superseded entry in one pass, once they may be half the queue: left in place,
// each would cost a pop when it surfaced, and the selections would sort them with the rest
// (in a crash, where most winners are re-scored several times, that was about two pops in
// three). Amortized O(1) per re-scored entry.
void Engine::purge_superseded(detail::KeptAdlQueue& q) {
  const auto superseded = [&](const detail::AdlEntry& x) { return !adl_entry_current(x); };
  for (detail::AdlEntries* part : {&q.heap, &q.reserve, &q.parked, &q.aside})
    part->erase(std::remove_if(part->begin(), part->end(), superseded), part->end());
  detail::adl_heap_make(q.heap, adl_order());
  detail::adl_heap_make(q.aside, adl_order());
  q.superseded = 0;
  q.dead_pops = 0;
}

// Drops the superseded entries of the heap alone (see `dead_pops`): O(heap), with the
// versions of its accounts mostly in cache.
void Engine::purge_heap(detail::KeptAdlQueue& q) {
  q.heap.erase(
      std::remove_if(q.heap.begin(), q.heap.end(), [&](const detail::AdlEntry& x) { return !adl_entry_current(x); }),
      q.heap.end());
  detail::adl_heap_make(q.heap, adl_order());
  q.dead_pops = 0;
}

AdlQueueStats Engine::adl_queue_stats(MarketId m, int side) const {
  markets_.market_or_throw(m, "market", 0);
  if (side != 1 && side != -1)
    throw InvalidInput("side: must be +1 (longs) or -1 (shorts), got " + std::to_string(side));
  AdlQueueStats out;
  const std::size_t i = 2 * static_cast<std::size_t>(m) + (side > 0 ? 1 : 0);
  if (i >= adl_queues_.size() || !adl_queues_[i].built) return out;
  const detail::KeptAdlQueue& q = adl_queues_[i];
  out.built = true;
  out.entries = static_cast<i64>(q.heap.size() + q.reserve.size());
  out.parked = static_cast<i64>(q.parked.size());
  out.aside = static_cast<i64>(q.aside.size());
  out.pops = static_cast<i64>(q.pops);
  return out;
}

bool Engine::adl_queue_pop(detail::KeptAdlQueue& q, detail::AdlEntry& out, bool with_aside) {
  const detail::AdlEntryAfter after = adl_order();
  for (;;) {
    // the heap's top is the head only while no reserve entry can come before it
    if (!q.reserve.empty() && (q.heap.empty() || after(q.heap.front(), q.threshold))) {
      select_adl_head(q);
      continue;
    }
    const bool from_aside =
        with_aside && !q.aside.empty() && (q.heap.empty() || after(q.heap.front(), q.aside.front()));
    detail::AdlEntries& h = from_aside ? q.aside : q.heap;
    if (h.empty()) return false;
    out = detail::adl_heap_pop(h, after);
    ++q.pops;
    // The heap's entries point all over the book: load ahead in two stages. The next pop is
    // most likely the new top, whose account line was requested a pop ago (it was a child of
    // the top then): request its positions now. The top's children are the candidates for the
    // pop after: request their account lines and versions.
    if (!h.empty()) {
      // (not for a superseded top, which the next pop drops without reading its positions:
      // finding its block would wait for its account line, often still on its way)
      if (adl_entry_current(h.front())) {
        prefetch_block(h.front().account);
        // the winner's fill reads its entry notional too
        __builtin_prefetch(book_.entries().data() + book_.hot()[h.front().account].start);
        // and a winner closed out leaves its market's holder list: its place there is read too
        __builtin_prefetch(book_.mslots().data() + book_.hot()[h.front().account].start);
      }
      for (std::size_t c = 1; c <= 4 && c < h.size(); ++c) {
        const std::uint32_t next = h[c].account;
        __builtin_prefetch(&book_.hot()[next]);
        if (next < account_version_.size()) __builtin_prefetch(&account_version_[next]);
      }
    }
    // A current entry's account has not changed since it was scored, so it still holds this
    // side (every position change bumps the version): no need to read the position here.
    if (!adl_entry_current(out)) {
      if (!from_aside && 4 * ++q.dead_pops > q.heap.size() + kHeapPurgeMin) purge_heap(q);
      continue;
    }
    return true;
  }
}

}  // namespace deleverage
