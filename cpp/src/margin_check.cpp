// Valuation of positions and accounts: the batch margin check (full and incremental), one
// account's margin, the per-position report with liquidation and bankruptcy prices.
#include <algorithm>
#include <atomic>
#include <limits>
#include <type_traits>

#include "deleverage/detail/display.hpp"
#include "deleverage/engine.hpp"
#include "deleverage/detail/parallel.hpp"

namespace deleverage {

namespace {
constexpr std::size_t kAccountsPerThreadMin = 4096;
constexpr std::size_t kPrefetchFar = 16;    // accounts ahead: their columns
constexpr std::size_t kPrefetchNear = 8;    // accounts ahead: their position blocks
constexpr std::size_t kFullPassShare = 50;  // a full pass beats the walk above 1/50 of the positions
constexpr std::size_t kFullPassMinPositions = std::size_t{1} << 16;  // small books: always walk

i128 abs128(i128 v) { return v < 0 ? -v : v; }

i128 checked_add(i128 a, i128 b) {
  i128 r;
  if (__builtin_add_overflow(a, b, &r)) throw ArithmeticOverflow("a price computation exceeded 128 bits");
  return r;
}
i128 checked_mul(i128 a, i128 b) {
  i128 r;
  if (__builtin_mul_overflow(a, b, &r)) throw ArithmeticOverflow("a price computation exceeded 128 bits");
  return r;
}
}  // namespace

Engine::Contribution Engine::contribution(const MarketState& mk, i64 size, i64 entry, i64 price) const {
  const i128 v = static_cast<i128>(size) * (static_cast<i128>(price) * mk.pow10k);
  const i128 notional = abs128(v);
  std::size_t j = 0;
  while (j + 1 < mk.tiers.size() && notional > mk.caps_v[j]) ++j;
  const Tier& t = mk.tiers[j];
  return Contribution{v - static_cast<i128>(entry) * markets_.scale(),
                      notional * t.maintenance_rate - t.maintenance_deduction * markets_.scale(),
                      notional * t.initial_rate - t.initial_deduction * markets_.scale()};
}

Engine::Sums Engine::account_sums(std::uint32_t a, bool at_valued_marks) const {
  Sums s;
  const std::uint32_t b = book_.hot()[a].start, e = b + book_.hot()[a].count;
  for (std::uint32_t p = b; p < e; ++p) {
    const MarketState& mk = markets_[static_cast<std::size_t>(book_.markets()[p])];
    const Contribution c =
        contribution(mk, book_.sizes()[p], book_.entries()[p], at_valued_marks ? mk.valued_mark : mk.mark);
    s.u += c.u;
    s.mm += c.mm;
    s.im += c.im;
  }
  return s;
}

bool Engine::sums_fit(i128 balance, const Sums& s) const {
  const i128 equity = balance + markets_.div_s().floor(s.u);
  return fits_i64(balance) && fits_i64(equity) && fits_i64(markets_.div_sr().ceil(s.mm)) &&
         fits_i64(markets_.div_sr().ceil(s.im));
}

void Engine::throw_unrepresentable(std::uint32_t a, const std::string& where) const {
  throw ArithmeticOverflow(where + ": account " + std::to_string(book_.ids()[a]) +
                           "'s equity or margin requirement at the current marks would not fit in 64 bits");
}

bool Engine::representable(std::uint32_t a) const {
  if (book_.hot()[a].count == 0) return true;  // flat: equity == balance, which every write checks
  const Sums s = account_sums(a, false);
  if (!sums_fit(book_.hot()[a].balance, s)) return false;
  note_in_range(book_.hot()[a].balance, s);
  return true;
}

void Engine::note_in_range(i128 balance, const Sums& s) const {
  const i128 equity = balance + markets_.div_s().floor(s.u);  // all three fit in int64 (sums_fit)
  bound_equity_.raise(static_cast<std::uint64_t>(abs128(equity)));
  bound_maintenance_.raise(static_cast<std::uint64_t>(std::max<i128>(0, markets_.div_sr().ceil(s.mm))));
  bound_initial_.raise(static_cast<std::uint64_t>(std::max<i128>(0, markets_.div_sr().ceil(s.im))));
}

namespace {
// a * b, or kTooLarge when it exceeds it (both operands non-negative)
constexpr u128 kTooLarge = static_cast<u128>(1) << 100;
u128 mul_bounded(u128 a, u128 b) {
  u128 r;
  return __builtin_mul_overflow(a, b, &r) || r > kTooLarge ? kTooLarge : r;
}
}  // namespace

// A mark move from p0 to p1 changes a position's value by at most |q| * |p1 - p0| * 10^k value
// units, and (rates never decrease from tier to tier and deductions make the requirement
// continuous) its maintenance and initial requirement by at most that times the last tier's
// rate. Summed over the moved markets with |q| <= max_abs_size, that bounds how far any
// account can move; rounding to money moves each quantity by at most one more unit.
bool Engine::mark_move_within_bounds(std::span<const std::pair<MarketId, i64>> moved) {
  u128 du = 0, dmm = 0, dim = 0;  // value units; value units x kRateScale
  for (const auto& [m, old_mark] : moved) {
    const MarketState& mk = markets_[static_cast<std::size_t>(m)];
    const i128 step = static_cast<i128>(mk.mark) - old_mark;
    const u128 dv = mul_bounded(mul_bounded(static_cast<u128>(mk.max_abs_size), static_cast<u128>(abs128(step))),
                                static_cast<u128>(mk.pow10k));
    du = std::min(du + dv, kTooLarge);
    dmm = std::min(dmm + mul_bounded(dv, static_cast<u128>(mk.tiers.back().maintenance_rate)), kTooLarge);
    dim = std::min(dim + mul_bounded(dv, static_cast<u128>(mk.tiers.back().initial_rate)), kTooLarge);
  }
  const u128 s = static_cast<u128>(markets_.scale()), sr = s * static_cast<u128>(kRateScale);
  const u128 equity = bound_equity_.get() + du / s + 2;
  const u128 maintenance = bound_maintenance_.get() + dmm / sr + 2;
  const u128 initial = bound_initial_.get() + dim / sr + 2;
  const u128 limit = static_cast<u128>(std::numeric_limits<i64>::max());
  // |equity| may reach 2^63 (int64's minimum) but requirements are positive: limit for all
  if (equity > limit || maintenance > limit || initial > limit) return false;
  bound_equity_.set(static_cast<std::uint64_t>(equity));
  bound_maintenance_.set(static_cast<std::uint64_t>(maintenance));
  bound_initial_.set(static_cast<std::uint64_t>(initial));
  return true;
}

void Engine::tighten_range_bounds() {
  bound_equity_.set(0);
  bound_maintenance_.set(0);
  bound_initial_.set(0);
  detail::parallel_for(book_.hot().size(), threads_, kAccountsPerThreadMin, [&](std::size_t begin, std::size_t end) {
    for (std::size_t a = begin; a < end; ++a) representable(static_cast<std::uint32_t>(a));
  });
}

std::uint32_t Engine::first_unrepresentable(const std::vector<std::uint32_t>& accounts) const {
  std::atomic<bool> any{false};
  detail::parallel_for(accounts.size(), threads_, kAccountsPerThreadMin, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end && !any.load(std::memory_order_relaxed); ++i)
      if (!representable(accounts[i])) any = true;
  });
  if (!any) return AccountIndex::kNone;
  for (std::uint32_t a : accounts)  // the error path: find the first one, in order
    if (!representable(a)) return a;
  return AccountIndex::kNone;
}

void Engine::require_marks_for_open_positions() const {
  for (std::size_t m = 0; m < markets_.size(); ++m)
    if (markets_[m].mark == 0 && !book_.holders(static_cast<MarketId>(m)).empty())
      throw InvalidInput("market '" + markets_[m].spec.symbol + "' (id " + std::to_string(m) +
                         ") has open positions but no mark price; call set_marks first");
}

AccountMargin Engine::account_margin(i64 account_id) const {
  const std::uint32_t a = account_index_or_throw(account_id, "account", 0);
  const std::uint32_t b = book_.hot()[a].start, e = b + book_.hot()[a].count;
  for (std::uint32_t p = b; p < e; ++p) {
    const MarketState& mk = markets_[static_cast<std::size_t>(book_.markets()[p])];
    if (mk.mark == 0)
      throw InvalidInput("market '" + mk.spec.symbol + "' has open positions but no mark price; call set_marks first");
  }
  return margin_from_sums(book_.hot()[a].balance, account_sums(a, false));
}

// A check that raises leaves every cache as it was: the valued marks go back to what they
// were and every account's sums are recomputed at them (only on the error path). Since the
// representable range is enforced by every state change, a check cannot fail on account
// values; this keeps a refusal atomic whatever the cause (e.g. out of memory).
template <class Fn>
void Engine::atomic_check(Fn&& check) {
  std::vector<i64> valued(markets_.size());
  for (std::size_t m = 0; m < markets_.size(); ++m) valued[m] = markets_[m].valued_mark;
  try {
    check();
  } catch (...) {
    for (std::size_t m = 0; m < markets_.size(); ++m) markets_[m].valued_mark = valued[m];
    for (std::size_t a = 0; a < book_.ids().size(); ++a)
      book_.hot()[a].cache = account_sums(static_cast<std::uint32_t>(a), true);
    throw;
  }
}

MarginReport Engine::check_margin() {
  require_marks_for_open_positions();
  const std::size_t n = book_.ids().size();
  MarginReport r;
  r.resize(n);
  std::copy(book_.ids().begin(), book_.ids().end(), r.account_id.begin());
  const MarginColumns cols = columns_of(r);
  atomic_check([&] { revalue_all(&cols); });
  return r;
}

MarginReport Engine::check_margin_values() {
  require_marks_for_open_positions();
  MarginReport r;
  r.resize(book_.ids().size());
  r.account_id = column<i64>();
  const MarginColumns cols = columns_of(r);
  atomic_check([&] { revalue_all(&cols); });
  return r;
}

void Engine::check_margin_into(const MarginColumns& out) {
  const bool exact = out.equity != nullptr && out.maintenance != nullptr && out.initial != nullptr;
  const bool quote = out.equity_quote != nullptr && out.maintenance_quote != nullptr && out.initial_quote != nullptr &&
                     out.margin_ratio != nullptr;
  // (with no accounts the columns are empty and their pointers may be null)
  if (!book_.ids().empty() && (out.liquidatable == nullptr || out.bankrupt == nullptr || (!exact && !quote)))
    throw InvalidInput("check_margin_into: the flag columns and the exact or the float columns are required");
  require_marks_for_open_positions();
  atomic_check([&] { revalue_all(&out); });
}

MarginColumns Engine::columns_of(MarginReport& r) {
  MarginColumns c;
  c.equity = r.equity.data();
  c.maintenance = r.maintenance.data();
  c.initial = r.initial.data();
  c.liquidatable = r.liquidatable.data();
  c.bankrupt = r.bankrupt.data();
  return c;
}

namespace {
// Per market constants. For a flat-rate market whose mark value and requirement per lot
// fit in 64 bits, each position costs three 64x64 multiplies:
//   value change = q * move_v,  mm = |q| * (mark_v * mmr),  im = |q| * (mark_v * imr)
// which regroup the exact products of docs/semantics.md without changing them. The value
// part is the change since the marks the account's cached sums are at (move_v = (mark -
// valued mark) * 10^k per lot): the cached u already holds every - E * S term, so the pass
// never reads the entry column.
struct MarketHot {
  i64 move_v, mm_per_lot, im_per_lot;
  i64 mark_v;  // for the 128-bit fallback (flat_sums_wide)
};

// Tiered markets: the tier is found from |q| alone, by comparing it with each cap in lots
// at this mark (|q| * mark_v > cap  <=>  |q| > floor(cap / mark_v)), and the requirement
// regroups as |q| * (mark_v * rate) - deduction * S: the same exact values as
// contribution() at the cost of a flat market plus a few compares. A market qualifies when
// it has at most kFastTiers tiers (real schedules have up to about a dozen) and every
// per-lot requirement fits 64 bits.
constexpr int kFastTiers = 16;
// One market's constants for a book whose longest schedule has at most N tiers: the tier
// index j is the number of caps |q| exceeds, and tier j's values are one row. A block is
// as small as N allows (a hundred 5-tier markets take 32 KB, against 90 KB for one layout
// sized for 16 tiers) and starts a cache line, so that its first line always holds the
// caps (unaligned 2-tier blocks measured 8% slower). Separate arrays of the rows' lots and
// deductions, or rows padded to a cache line each, measured slower.
//
// Ded = i64 when every deduction of the book fits int64: the rows hold the deductions
// themselves (32 bytes a row) and the pass sums them apart in 64 bits, then multiplies the
// sums by S once per account (8% faster at 5 tiers than 128-bit deductions times S in each
// row). Else Ded = i128 and the rows hold deduction * S (a large schedule's top deductions
// need more than 64 bits).
template <class Ded>
struct TierRow {
  i64 mm_lot, im_lot;  // mark_v * rate
  Ded mm_ded, im_ded;
};
template <int N, class Ded>
struct alignas(64) TierBlock {
  i64 move_v;           // value change per lot since the valued mark (MarketHot)
  u64 lots_cap[N - 1];  // caps past the market's last tier are UINT64_MAX
  TierRow<Ded> rows[N];
};
// The per-market constants of a full pass (above), at the current marks.
struct FullCheckTables {
  std::vector<MarketHot> hot;
  bool all_fast = true;           // every market flat-rate with 64-bit per-lot values
  bool all_tier_fast = false;     // else: every market within kFastTiers tiers, 64-bit per lot
  int max_tiers = 1;              // the longest schedule's tier count
  bool narrow_deductions = true;  // every deduction fits int64 (TierRow<i64>)
};

// Whether a market's constants fit the tiered path's 64-bit words (at the current marks).
bool tier_fast(const MarketState& mk) {
  const i128 mark_v = static_cast<i128>(mk.mark) * mk.pow10k;
  const i128 move_v = (static_cast<i128>(mk.mark) - mk.valued_mark) * mk.pow10k;
  if (mark_v == 0) return true;  // no mark yet, so no positions (checked before any pass)
  if (mk.tiers.size() > static_cast<std::size_t>(kFastTiers) || !fits_i64(mark_v) || mark_v < 0 || !fits_i64(move_v))
    return false;
  for (const Tier& tier : mk.tiers)
    if (!fits_i64(mark_v * tier.maintenance_rate) || !fits_i64(mark_v * tier.initial_rate)) return false;
  return true;
}

FullCheckTables full_check_tables(const MarketTable& markets) {
  FullCheckTables t;
  std::vector<MarketHot>& hot = t.hot;
  hot.resize(markets.size());
  for (std::size_t m = 0; m < markets.size(); ++m) {
    const MarketState& mk = markets[m];
    const i128 mark_v = static_cast<i128>(mk.mark) * mk.pow10k;
    const i128 move_v = (static_cast<i128>(mk.mark) - mk.valued_mark) * mk.pow10k;
    const i128 mm = mark_v * mk.tiers[0].maintenance_rate, im = mark_v * mk.tiers[0].initial_rate;
    const bool fast = mk.tiers.size() == 1 && fits_i64(mark_v) && fits_i64(move_v) && fits_i64(mm) && fits_i64(im);
    t.all_fast = t.all_fast && fast;
    hot[m] = MarketHot{fast ? static_cast<i64>(move_v) : 0, fast ? static_cast<i64>(mm) : 0,
                       fast ? static_cast<i64>(im) : 0, fast ? static_cast<i64>(mark_v) : 0};
  }
  t.all_tier_fast = !t.all_fast;  // only needed when some market is not flat-fast
  for (std::size_t m = 0; m < markets.size() && t.all_tier_fast; ++m) {
    t.all_tier_fast = tier_fast(markets[m]);
    t.max_tiers = std::max(t.max_tiers, static_cast<int>(markets[m].tiers.size()));
    // deductions grow from tier to tier: the last tier's are the largest
    const Tier& last = markets[m].tiers.back();
    t.narrow_deductions =
        t.narrow_deductions && fits_i64(last.maintenance_deduction) && fits_i64(last.initial_deduction);
  }
  return t;
}

// The TierBlocks of every market (all tier_fast), for schedules of at most N tiers.
template <int N, class Ded>
std::vector<TierBlock<N, Ded>> tier_blocks(const MarketTable& markets) {
  // i64: the deduction (narrow_deductions); i128: deduction * S
  const i64 ded_scale = std::is_same_v<Ded, i64> ? 1 : markets.scale();
  std::vector<TierBlock<N, Ded>> blocks(markets.size());
  for (std::size_t m = 0; m < markets.size(); ++m) {
    const MarketState& mk = markets[m];
    const i128 mark_v = static_cast<i128>(mk.mark) * mk.pow10k;
    TierBlock<N, Ded>& b = blocks[m];
    b = TierBlock<N, Ded>{};
    std::fill(std::begin(b.lots_cap), std::end(b.lots_cap), std::numeric_limits<u64>::max());
    if (mark_v == 0) continue;  // no positions (tier_fast)
    b.move_v = static_cast<i64>((static_cast<i128>(mk.mark) - mk.valued_mark) * mk.pow10k);
    const int count = static_cast<int>(mk.tiers.size());
    for (int j = 0; j < count; ++j) {
      const Tier& tier = mk.tiers[static_cast<std::size_t>(j)];
      b.rows[j] =
          TierRow<Ded>{static_cast<i64>(mark_v * tier.maintenance_rate), static_cast<i64>(mark_v * tier.initial_rate),
                       static_cast<Ded>(tier.maintenance_deduction * ded_scale),
                       static_cast<Ded>(tier.initial_deduction * ded_scale)};
      if (j + 1 < count) {
        const i128 cap_lots = mk.caps_v[static_cast<std::size_t>(j)] / mark_v;  // caps are >= 0
        b.lots_cap[j] = static_cast<u64>(std::min<i128>(cap_lots, std::numeric_limits<i64>::max()));
      }
    }
  }
  return blocks;
}
// The position columns and per-market constants of a full pass as raw pointers in one
// place: the compiler keeps them in registers instead of reloading them through the engine.
struct PassInputs {
  const i64* __restrict size;
  const i64* __restrict entry;
  const std::uint16_t* __restrict market;
  const MarketHot* hot;
  const void* tiers;  // TierBlock<N, Ded>[markets] on the tiered path
  i64 S;
};

// One account's sums on the fast paths. The value change (q * move_v, value units) is kept
// in 64 bits, checked: added to the cached u it gives the same integer as contribution()'s
// sum of (q * mark_v - E * S). The requirements stay 128-bit: in value units times
// kRateScale they pass 2^63 on most accounts of a book with S = 1000.
struct FastSums {
  i64 value_change = 0;
  i128 mm = 0, im = 0;
};

// Flat-rate markets (MarketHot::fast); false when a 64-bit sum overflows.
bool flat_sums(const PassInputs& in, std::uint32_t b, std::uint32_t e, FastSums& s) {
  for (std::uint32_t p = b; p < e; ++p) {
    const MarketHot& h = in.hot[static_cast<std::size_t>(in.market[p])];
    const i64 q = in.size[p];
    const i64 abs_q = q < 0 ? -q : q;
    i64 v;
    if (__builtin_mul_overflow(q, h.move_v, &v) || __builtin_add_overflow(s.value_change, v, &s.value_change))
        [[unlikely]]
      return false;
    s.mm += static_cast<i128>(abs_q) * h.mm_per_lot;
    s.im += static_cast<i128>(abs_q) * h.im_per_lot;
  }
  return true;
}

// The same sums in 128 bits (an account whose value or entry sum passes 64 bits). Rare: kept
// out of line, so that the pass's loop keeps its registers.
[[gnu::noinline]] detail::MarginSums flat_sums_wide(const PassInputs& in, std::uint32_t b, std::uint32_t e) {
  i128 u = 0, mm = 0, im = 0;
  for (std::uint32_t p = b; p < e; ++p) {
    const MarketHot& h = in.hot[static_cast<std::size_t>(in.market[p])];
    const i64 q = in.size[p];
    const i64 abs_q = q < 0 ? -q : q;
    u += static_cast<i128>(q) * h.mark_v - static_cast<i128>(in.entry[p]) * in.S;
    mm += static_cast<i128>(abs_q) * h.mm_per_lot;
    im += static_cast<i128>(abs_q) * h.im_per_lot;
  }
  return detail::MarginSums{u, mm, im};
}

// Tiered markets within N tiers (TierBlock); false when a 64-bit sum overflows. One loop
// for the whole book, no branch on each position's market: every position counts the N - 1
// caps of its market, an unsigned compare and an add with carry per cap (positions spread
// over tiers would defeat a branch's prediction; a branch-free binary search, and selecting
// the row's values with conditional moves instead of loading row j, measured slower).
// 64-bit deductions are summed apart (checked) and multiplied by S at the end; 128-bit ones
// (deduction * S) go into the requirement sums with the products: separate 128-bit sums
// took registers the loop then spilled.
template <int N, class Ded>
bool tiered_sums(const PassInputs& in, std::uint32_t b, std::uint32_t e, FastSums& s) {
  const TierBlock<N, Ded>* blocks = static_cast<const TierBlock<N, Ded>*>(in.tiers);
  i64 mm_ded = 0, im_ded = 0;  // (narrow deductions)
  for (std::uint32_t p = b; p < e; ++p) {
    const TierBlock<N, Ded>& t = blocks[static_cast<std::size_t>(in.market[p])];
    const i64 q = in.size[p];
    const i64 abs_q = q < 0 ? -q : q;  // < 2^63: sizes never hold INT64_MIN
    i64 v;
    if (__builtin_mul_overflow(q, t.move_v, &v) || __builtin_add_overflow(s.value_change, v, &s.value_change))
        [[unlikely]]
      return false;
    std::size_t j = 0;
    for (int k = 0; k < N - 1; ++k) j += static_cast<u64>(abs_q) > t.lots_cap[k] ? 1 : 0;
    const TierRow<Ded>& r = t.rows[j];
    if constexpr (std::is_same_v<Ded, i64>) {
      s.mm += static_cast<i128>(abs_q) * r.mm_lot;
      s.im += static_cast<i128>(abs_q) * r.im_lot;
      if (__builtin_add_overflow(mm_ded, r.mm_ded, &mm_ded) || __builtin_add_overflow(im_ded, r.im_ded, &im_ded))
          [[unlikely]]
        return false;
    } else {
      s.mm += static_cast<i128>(abs_q) * r.mm_lot - r.mm_ded;
      s.im += static_cast<i128>(abs_q) * r.im_lot - r.im_ded;
    }
  }
  s.mm -= static_cast<i128>(mm_ded) * in.S;
  s.im -= static_cast<i128>(im_ded) * in.S;
  return true;
}

// margin_from_sums' values from FastSums, by multiplications with reciprocals instead of
// 128-bit divisions; false when one of them does not fit 64 bits (margin_from_sums then
// reports which).
[[gnu::always_inline]] inline bool fast_margin(i64 balance, i128 u, const FastSums& s, const ConstantDivider& div_s,
                                               const ConstantDivider& div_sr, i64& equity, i64& maintenance,
                                               i64& initial) {
  // floor(u / S) branch-free on int64 (u's sign is data, unpredictable); a u past int64 is
  // rare and takes margin_from_sums. No 128-bit temporaries: they went through the stack.
  if (!fits_i64(u)) return false;
  if (__builtin_add_overflow(balance, div_s.floor_i64(static_cast<i64>(u)), &equity)) return false;
  return div_sr.ceil_i64(s.mm, maintenance) && div_sr.ceil_i64(s.im, initial);
}

// Everything a pass writes besides the cached sums, copied by value into each worker: the
// flag columns are bytes, which may alias anything, so values reached through a pointer or a
// reference would be reloaded after every row.
struct PassOutputs {
  MarginColumns cols;  // the caller's report columns (null ones are skipped)
  i64* step_balance;   // a waterfall step's columns, or null
  i64* step_equity;
  i64* step_maintenance;
  double quote_unit;
  ConstantDivider div_s, div_sr;
  bool rows() const { return cols.liquidatable != nullptr || step_balance != nullptr; }
};

// The values by value, in registers (the flags are margin_from_sums' definitions).
void write_row(const PassOutputs& o, std::size_t a, i64 balance, i64 equity, i64 maintenance, i64 initial) {
  if (o.step_balance != nullptr) {
    o.step_balance[a] = balance;
    o.step_equity[a] = equity;
    o.step_maintenance[a] = maintenance;
  }
  if (o.cols.liquidatable == nullptr) return;
  if (o.cols.equity != nullptr) {
    o.cols.equity[a] = equity;
    o.cols.maintenance[a] = maintenance;
    o.cols.initial[a] = initial;
  }
  if (o.cols.equity_quote != nullptr) {  // the display conversion, while the values are in registers
    o.cols.equity_quote[a] = static_cast<double>(equity) / o.quote_unit;
    o.cols.maintenance_quote[a] = static_cast<double>(maintenance) / o.quote_unit;
    o.cols.initial_quote[a] = static_cast<double>(initial) / o.quote_unit;
    o.cols.margin_ratio[a] = detail::margin_ratio(equity, maintenance);
  }
  o.cols.liquidatable[a] = equity < maintenance;
  o.cols.bankrupt[a] = equity < 0;
}

enum class Path { Flat, Tiered, General };  // General: many tiers or huge values

// The full pass over accounts [begin, end), compiled once per path so that the loop holds no
// branch on it (N, Ded: the tiered path's TierBlock). `wide_sums(a)` and
// `wide_margin(balance, sums)` are the engine's general 128-bit computations, for the rare
// account whose 64-bit sums overflow.
template <Path P, int N, class Ded, class WideSums, class WideMargin>
void revalue_range(const PassInputs in, const PassOutputs o, detail::AccountHot* accounts, std::size_t begin,
                   std::size_t end, const WideSums& wide_sums, const WideMargin& wide_margin) {
  const bool rows = o.rows();
  for (std::size_t a = begin; a < end; ++a) {
    detail::AccountHot& acc = accounts[a];
    const std::uint32_t b = acc.start, e = b + acc.count;
    FastSums f;
    bool fast = false;
    if constexpr (P == Path::Flat) fast = flat_sums(in, b, e, f);
    if constexpr (P == Path::Tiered) fast = tiered_sums<N, Ded>(in, b, e, f);
    i64 equity = 0, maintenance = 0, initial = 0;
    bool rounded = false;
    if (fast) [[likely]] {
      // member by member: a whole-struct copy went through the stack and stalled on it
      acc.cache.u += f.value_change;
      acc.cache.mm = f.mm;
      acc.cache.im = f.im;
      if (!rows) continue;
      rounded = fast_margin(acc.balance, acc.cache.u, f, o.div_s, o.div_sr, equity, maintenance, initial);
    } else {
      if constexpr (P == Path::Flat)
        acc.cache = flat_sums_wide(in, b, e);
      else
        acc.cache = wide_sums(static_cast<std::uint32_t>(a));
      if (!rows) continue;
    }
    if (!rounded) [[unlikely]] {
      const AccountMargin am = wide_margin(acc.balance, acc.cache);
      equity = am.equity;
      maintenance = am.maintenance;
      initial = am.initial;
    }
    write_row(o, a, acc.balance, equity, maintenance, initial);
  }
}
}  // namespace

// Recomputes every account's cached sums at the current marks (both cores); fills `out`'s
// per-account columns when given.
void Engine::revalue_all(const MarginColumns* out, StepMargins* step) {
  const std::size_t n = book_.ids().size();
  PassOutputs o{out != nullptr ? *out : MarginColumns{},
                step != nullptr ? step->balance.data() : nullptr,
                step != nullptr ? step->equity.data() : nullptr,
                step != nullptr ? step->maintenance.data() : nullptr,
                detail::kPow10Double[markets_.money_decimals()],
                markets_.div_s(),
                markets_.div_sr()};
  if (n == 0) o.cols.liquidatable = nullptr;  // (empty columns may have null pointers)

  const FullCheckTables tables = full_check_tables(markets_);
  const Path path = tables.all_fast ? Path::Flat : (tables.all_tier_fast ? Path::Tiered : Path::General);
  PassInputs in{book_.sizes().data(), book_.entries().data(), book_.markets().data(), tables.hot.data(), nullptr,
                markets_.scale()};
  AccountHot* const accounts = book_.hot().data();
  const auto wide_sums = [this](std::uint32_t a) { return account_sums(a, false); };
  const auto wide_margin = [this](i64 balance, const Sums& s) { return margin_from_sums(balance, s); };
  const auto pass = [&]<Path P, int N, class Ded>() {
    detail::parallel_for_dynamic(n, threads_, 16384, [&](std::size_t begin, std::size_t end) {
      revalue_range<P, N, Ded>(in, o, accounts, begin, end, wide_sums, wide_margin);
    });
  };
  // the tiered path sizes its blocks to the longest schedule: the common lengths get a
  // loop of their own, longer ones count 11 caps (12 tiers: 13% faster than counting 15)
  // or kFastTiers - 1
  const auto tiered_with = [&]<int N, class Ded>() {
    const std::vector<TierBlock<N, Ded>> blocks = tier_blocks<N, Ded>(markets_);
    in.tiers = blocks.data();
    pass.template operator()<Path::Tiered, N, Ded>();
  };
  const auto tiered = [&]<int N>() {
    if (tables.narrow_deductions)
      tiered_with.template operator()<N, i64>();
    else
      tiered_with.template operator()<N, i128>();
  };
  if (path == Path::Flat) {
    pass.template operator()<Path::Flat, 1, i64>();
  } else if (path == Path::General) {
    pass.template operator()<Path::General, 1, i64>();
  } else {
    switch (tables.max_tiers) {
      case 1:
      case 2:
        tiered.template operator()<2>();
        break;
      case 3:
        tiered.template operator()<3>();
        break;
      case 4:
        tiered.template operator()<4>();
        break;
      case 5:
        tiered.template operator()<5>();
        break;
      case 6:
        tiered.template operator()<6>();
        break;
      default:
        if (tables.max_tiers <= 12)  // large exchanges' schedules: about a dozen tiers
          tiered.template operator()<12>();
        else
          tiered.template operator()<kFastTiers>();
    }
  }
  for (MarketState& mk : markets_) mk.valued_mark = mk.mark;
}

MarginReport Engine::check_margin(std::span<const MarketId> moved) {
  std::vector<std::uint8_t> requested(markets_.size(), 0);
  for (std::size_t i = 0; i < moved.size(); ++i) {
    markets_.market_or_throw(moved[i], "markets", i);
    requested[static_cast<std::size_t>(moved[i])] = 1;
  }
  MarginReport full;
  bool used_full_pass = false;
  std::vector<std::uint32_t> touched;
  MarginReport walked;
  atomic_check([&] {
    touched = revalue_moved_markets(requested, &full, &used_full_pass);
    if (!used_full_pass) walked = report_for(touched);
  });
  if (!used_full_pass) return walked;
  // the full pass already computed every row: gather the exposed ones in account order
  MarginReport r;
  const std::size_t n = touched.size();
  r.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t a = touched[i];
    r.account_id[i] = book_.ids()[a];
    r.equity[i] = full.equity[a];
    r.maintenance[i] = full.maintenance[a];
    r.initial[i] = full.initial[a];
    r.liquidatable[i] = full.liquidatable[a];
    r.bankrupt[i] = full.bankrupt[a];
  }
  return r;
}

bool Engine::revalue_for_step(StepMargins& step) {
  require_marks_for_open_positions();
  std::size_t moved_positions = 0;
  for (std::size_t m = 0; m < markets_.size(); ++m)
    if (markets_[m].mark != markets_[m].valued_mark) moved_positions += book_.holders(static_cast<MarketId>(m)).size();
  if (book_.live_positions() >= kFullPassMinPositions && moved_positions * kFullPassShare > book_.live_positions()) {
    step.balance.resize(book_.ids().size());
    step.equity.resize(book_.ids().size());
    step.maintenance.resize(book_.ids().size());
    revalue_all(nullptr, &step);
    return true;
  }
  revalue_moved_markets(std::vector<std::uint8_t>(markets_.size(), 0), nullptr, nullptr, /*collect=*/false);
  return false;
}

// Brings the cached sums of every market whose mark moved (and of the requested ones) to
// the current marks; returns the sorted accounts holding a position in any of them.
std::vector<std::uint32_t> Engine::revalue_moved_markets(const std::vector<std::uint8_t>& requested,
                                                         MarginReport* full_out, bool* used_full_pass, bool collect) {
  // An account exposed to a revalued market may hold any other market too: every market
  // with positions needs a mark, as in the full check.
  require_marks_for_open_positions();
  std::vector<std::uint8_t> revalue(requested);
  for (std::size_t m = 0; m < markets_.size(); ++m)
    if (markets_[m].mark != markets_[m].valued_mark) revalue[m] = 1;
  // Revaluing a scattered account costs ~40x a streamed one: past a small share of the
  // book, one full pass is cheaper than walking the moved markets.
  std::size_t moved_positions = 0;
  for (std::size_t m = 0; m < markets_.size(); ++m)
    if (revalue[m] && markets_[m].mark != markets_[m].valued_mark)
      moved_positions += book_.holders(static_cast<MarketId>(m)).size();
  const bool full_pass =
      book_.live_positions() >= kFullPassMinPositions && moved_positions * kFullPassShare > book_.live_positions();
  if (full_pass) {
    if (full_out != nullptr) full_out->resize(book_.ids().size());
    if (full_out != nullptr) {
      const MarginColumns cols = columns_of(*full_out);
      revalue_all(&cols);
    } else {
      revalue_all(nullptr);
    }
    if (used_full_pass != nullptr) *used_full_pass = full_out != nullptr;
  }
  std::vector<std::uint32_t> touched;
  int lists = 0;
  for (std::size_t m = 0; m < markets_.size(); ++m) {
    if (!revalue[m]) continue;
    MarketState& mk = markets_[m];
    const auto mid = static_cast<MarketId>(m);
    if (mk.mark != mk.valued_mark) {
      // For a flat-rate market the change is linear in the mark: one multiply per field.
      const i128 dv = (static_cast<i128>(mk.mark) - mk.valued_mark) * mk.pow10k;
      const bool flat = mk.tiers.size() == 1;
      const i128 dmm = dv * mk.tiers[0].maintenance_rate, dim = dv * mk.tiers[0].initial_rate;
      const std::vector<std::uint32_t>& list = book_.holders(mid);
      for (std::size_t i = 0; i < list.size(); ++i) {
        // The accounts of one market are scattered over the columns: prefetch ahead so
        // the cache misses overlap instead of being paid one after another.
        if (i + kPrefetchFar < list.size()) prefetch_account(list[i + kPrefetchFar]);
        if (i + kPrefetchNear < list.size()) prefetch_block(list[i + kPrefetchNear]);
        const std::uint32_t a = list[i];
        const std::uint32_t s = find_slot(a, mid);
        const i64 q = book_.sizes()[s];
        Sums& c = book_.hot()[a].cache;
        if (flat) {
          const i128 abs_q = q < 0 ? -static_cast<i128>(q) : q;
          c.u += q * dv;
          c.mm += abs_q * dmm;
          c.im += abs_q * dim;
        } else {
          const Contribution before = contribution(mk, q, book_.entries()[s], mk.valued_mark);
          const Contribution after = contribution(mk, q, book_.entries()[s], mk.mark);
          c.u += after.u - before.u;
          c.mm += after.mm - before.mm;
          c.im += after.im - before.im;
        }
      }
      mk.valued_mark = mk.mark;
    }
    if (collect) {
      const std::vector<std::uint32_t>& holders = book_.holders(mid);
      touched.insert(touched.end(), holders.begin(), holders.end());
    }
    ++lists;
  }
  if (!collect) return touched;
  if (lists > 1) {
    // several lists: a mark per account gives the sorted union in O(accounts + positions)
    std::vector<std::uint8_t> seen(book_.ids().size(), 0);
    for (std::uint32_t a : touched) seen[a] = 1;
    touched.clear();
    for (std::size_t a = 0; a < seen.size(); ++a)
      if (seen[a]) touched.push_back(static_cast<std::uint32_t>(a));
  } else {
    sort_nearly_sorted(touched);  // one market's list: sorted but for a few displaced entries
  }
  return touched;
}

void Engine::prefetch_account(std::uint32_t a) const {
  __builtin_prefetch(&book_.hot()[a]);
  __builtin_prefetch(&book_.ids()[a]);
}

void Engine::prefetch_block(std::uint32_t a) const {
  // pointer arithmetic, not operator[]: an empty block may start at the end of the columns
  const std::uint32_t b = book_.hot()[a].start;
  __builtin_prefetch(book_.markets().data() + b);
  __builtin_prefetch(book_.sizes().data() + b);
}

// Sorts a list that is ascending but for a few displaced entries (swap-removes and late
// inserts in a market's account list) in O(n + k log k): every inversion sends both of its
// elements to a small side list, which is sorted and merged back.
void sort_nearly_sorted(std::vector<std::uint32_t>& v) {
  std::vector<std::uint32_t> kept, displaced;
  kept.reserve(v.size());
  for (std::uint32_t x : v) {
    if (!kept.empty() && x < kept.back()) {
      displaced.push_back(x);
      displaced.push_back(kept.back());
      kept.pop_back();
    } else {
      kept.push_back(x);
    }
  }
  if (displaced.empty()) return;
  std::sort(displaced.begin(), displaced.end());
  std::merge(kept.begin(), kept.end(), displaced.begin(), displaced.end(), v.begin());
}

MarginReport Engine::report_for(const std::vector<std::uint32_t>& accounts) const {
  MarginReport r;
  const std::size_t n = accounts.size();
  r.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (i + kPrefetchFar < n) prefetch_account(accounts[i + kPrefetchFar]);
    const std::uint32_t a = accounts[i];
    const AccountMargin am = margin_from_sums(book_.hot()[a].balance, book_.hot()[a].cache);
    r.account_id[i] = book_.ids()[a];
    r.equity[i] = am.equity;
    r.maintenance[i] = am.maintenance;
    r.initial[i] = am.initial;
    r.liquidatable[i] = am.liquidatable;
    r.bankrupt[i] = am.bankrupt;
  }
  return r;
}

PositionReport Engine::positions(DeficitSplit split) const {
  require_marks_for_open_positions();
  const std::size_t n_acc = book_.ids().size();
  std::vector<std::size_t> offset(n_acc + 1, 0);
  for (std::size_t a = 0; a < n_acc; ++a) offset[a + 1] = offset[a] + book_.hot()[a].count;
  const std::size_t n = offset[n_acc];
  PositionReport r;
  r.account_id.resize(n);
  r.market.resize(n);
  r.size.resize(n);
  r.entry_notional.resize(n);
  r.unrealized_pnl.resize(n);
  r.liquidation_price.resize(n);
  r.bankruptcy_price.resize(n);
  const i64 S = markets_.scale();

  detail::parallel_for(n_acc, threads_, kAccountsPerThreadMin, [&](std::size_t begin, std::size_t end) {
    std::vector<std::uint32_t> order;
    for (std::size_t a = begin; a < end; ++a) {
      const std::uint32_t b = book_.hot()[a].start, cnt = book_.hot()[a].count;
      if (cnt == 0) continue;
      order.assign(cnt, 0);
      for (std::uint32_t i = 0; i < cnt; ++i) order[i] = b + i;
      std::sort(order.begin(), order.end(),
                [&](std::uint32_t x, std::uint32_t y) { return book_.markets()[x] < book_.markets()[y]; });
      const Sums total = account_sums(static_cast<std::uint32_t>(a), false);
      const AccountMargin am = margin_from_sums(book_.hot()[a].balance, total);
      // weights for splitting the equity into per-position bankruptcy shares (split_equity's
      // rule; each price is priced from its own floor share, without the remainder)
      i128 w_mm = 0, w_notional = 0, w_loss = 0;
      for (std::uint32_t p : order) {
        const MarketState& mk = markets_[static_cast<std::size_t>(book_.markets()[p])];
        const Contribution c = contribution(mk, book_.sizes()[p], book_.entries()[p], mk.mark);
        w_mm += markets_.div_sr().ceil(c.mm);
        w_notional += markets_.div_s().floor(abs128(markets_.value_v(mk, book_.sizes()[p], mk.mark)));
        w_loss += std::max<i128>(0, -markets_.div_s().floor(c.u));
      }
      const bool by_loss = split == DeficitSplit::Loss && am.equity < 0 && w_loss > 0;
      std::size_t row = offset[a];
      for (std::uint32_t p : order) {
        const MarketId m = book_.markets()[p];
        const MarketState& mk = markets_[static_cast<std::size_t>(m)];
        const i64 q = book_.sizes()[p], E = book_.entries()[p], price = mk.mark;
        const i64 abs_q = q < 0 ? -q : q;
        const Contribution c = contribution(mk, q, E, price);
        r.account_id[row] = book_.ids()[a];
        r.market[row] = m;
        r.size[row] = q;
        r.entry_notional[row] = E;
        r.unrealized_pnl[row] = to_i64_checked(markets_.div_s().floor(c.u), "unrealized pnl");

        // Liquidation price: root of equity(x) == maintenance(x), tier by tier.
        const i128 eq_other = checked_add(static_cast<i128>(book_.hot()[a].balance) * S, total.u - c.u);
        const i128 mm_other = total.mm - c.mm;
        i64 liq = 0;
        for (std::size_t j = 0; j < mk.tiers.size(); ++j) {
          const Tier& t = mk.tiers[j];
          const i128 den =
              checked_mul(mk.pow10k, static_cast<i128>(q) * kRateScale - static_cast<i128>(abs_q) * t.maintenance_rate);
          if (den == 0) break;
          const i128 num = checked_add(checked_add(mm_other, -checked_mul(t.maintenance_deduction, S)),
                                       -checked_mul(checked_add(eq_other, -static_cast<i128>(E) * S), kRateScale));
          const i128 x = q > 0 ? ceil_div_signed(num, den) : floor_div_signed(num, den);
          const bool last = j + 1 == mk.tiers.size();
          if (!last && x > 0 && checked_mul(checked_mul(abs_q, x), mk.pow10k) > mk.caps_v[j]) continue;
          liq = x > 0 && fits_i64(x) ? static_cast<i64>(x) : 0;
          break;
        }
        r.liquidation_price[row] = liq;

        // Bankruptcy price: this position's share of the equity, by loss or maintenance margin.
        i128 w, w_sum;
        if (by_loss) {
          w = std::max<i128>(0, -markets_.div_s().floor(c.u));
          w_sum = w_loss;
        } else if (w_mm > 0) {
          w = markets_.div_sr().ceil(c.mm);
          w_sum = w_mm;
        } else if (w_notional > 0) {
          w = markets_.div_s().floor(abs128(markets_.value_v(mk, q, price)));
          w_sum = w_notional;
        } else {
          w = 1;
          w_sum = cnt;
        }
        const i128 share = floor_div(checked_mul(am.equity, w), w_sum);
        const i128 bk_den = static_cast<i128>(q) * mk.pow10k;
        const i128 bk_num = checked_add(markets_.value_v(mk, q, price), -checked_mul(share, S));
        const i128 x = q > 0 ? floor_div_signed(bk_num, bk_den) : ceil_div_signed(bk_num, bk_den);
        r.bankruptcy_price[row] = x > 0 && fits_i64(x) ? static_cast<i64>(x) : 0;
        ++row;
      }
    }
  });
  return r;
}

void Engine::check_invariants() const {
  // 0. every operation finished forgets its undo entries (undo_log.hpp)
  if (book_.undo_log().mark() != 0)
    throw InvariantViolation("the undo log holds " + std::to_string(book_.undo_log().mark()) +
                             " entries between operations");
  // 1. conservation
  i128 cash = 0;
  for (std::size_t a = 0; a < book_.ids().size(); ++a) {
    cash += book_.hot()[a].balance;
    for (std::uint32_t p = book_.hot()[a].start; p < book_.hot()[a].start + book_.hot()[a].count; ++p)
      cash -= book_.entries()[p];
  }
  const i128 fund = insurance_.total();
  const i128 expected = flows_.deposits - flows_.withdrawals - flows_.loaded_entry_notional +
                        flows_.insurance_deposits + flows_.loaded_balances;
  if (cash + fund != expected)
    throw InvariantViolation("conservation: accounts hold " + to_string_i128(cash) +
                             " money units of cash and the insurance fund " + to_string_i128(fund) + ", expected " +
                             to_string_i128(expected) + " in total");
  // 2. zero net size, 3. market lists match the positions
  std::vector<i128> net(markets_.size(), 0);
  std::vector<std::size_t> count(markets_.size(), 0);
  std::size_t live = 0;
  for (std::size_t a = 0; a < book_.ids().size(); ++a) {
    for (std::uint32_t p = book_.hot()[a].start; p < book_.hot()[a].start + book_.hot()[a].count; ++p) {
      const MarketId m = book_.markets()[p];
      if (static_cast<std::size_t>(m) >= markets_.size() || book_.sizes()[p] == 0)
        throw InvariantViolation("position slot " + std::to_string(p) + " of account " +
                                 std::to_string(book_.ids()[a]) + " is corrupt");
      const MarketState& mk = markets_[static_cast<std::size_t>(m)];
      const std::vector<std::uint32_t>& holders = book_.holders(m);
      if (book_.mslots()[p] >= holders.size() || holders[book_.mslots()[p]] != a)
        throw InvariantViolation("market list of '" + mk.spec.symbol + "' does not point back at account " +
                                 std::to_string(book_.ids()[a]));
      if (find_slot(static_cast<std::uint32_t>(a), m) != p)
        throw InvariantViolation("account " + std::to_string(book_.ids()[a]) + " holds two positions in market '" +
                                 mk.spec.symbol + "'");
      net[static_cast<std::size_t>(m)] += book_.sizes()[p];
      ++count[static_cast<std::size_t>(m)];
      ++live;
    }
    const Sums fresh = account_sums(static_cast<std::uint32_t>(a), true);
    const Sums& cached = book_.hot()[a].cache;
    if (fresh.u != cached.u || fresh.mm != cached.mm || fresh.im != cached.im)
      throw InvariantViolation("cached margin sums of account " + std::to_string(book_.ids()[a]) + " are stale");
  }
  if (live != book_.live_positions()) throw InvariantViolation("position count is stale");
  for (std::size_t m = 0; m < markets_.size(); ++m) {
    if (net[m] != 0)
      throw InvariantViolation("zero net size: market '" + markets_[m].spec.symbol + "' nets to " +
                               to_string_i128(net[m]) + " lots");
    if (count[m] != book_.holders(static_cast<MarketId>(m)).size())
      throw InvariantViolation("market list of '" + markets_[m].spec.symbol + "' has stale entries");
  }
}

}  // namespace deleverage
