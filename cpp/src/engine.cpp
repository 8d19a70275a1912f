// Engine construction, markets, value scales and the position storage (blocks per account).
#include "deleverage/engine.hpp"

#include <algorithm>
#include <limits>
#include <thread>

namespace deleverage {

namespace {
constexpr int kMaxExtraValueDecimals = 8;  // D - money_decimals; keeps account sums in 128 bits
constexpr std::size_t kMaxMarkets = 1024;

// Well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): symbols
// reach Python as str, and snapshots or journals may carry them from other writers.
bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned c = p[i];
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else
      return false;
    if (i + len > n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}
}  // namespace

namespace {
// 10^k per lot-tick (k = value decimals - qty - price decimals) must fit int64: k <= 18.
constexpr int kMaxValueScaleDecimals = 18;
}  // namespace

Engine::Engine(int money_decimals, int threads) : money_decimals_(money_decimals) {
  if (money_decimals < 0 || money_decimals > 12)
    throw ConfigError("money_decimals must be between 0 and 12 (got " + std::to_string(money_decimals) + ")");
  threads_ = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  value_decimals_ = money_decimals;
  scale_s_ = 1;
  div_s_ = ConstantDivider(1);
  div_sr_ = ConstantDivider(kRateScale);
}

void Engine::set_threads(int threads) {
  threads_ = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

i64 Engine::value_at(MarketId m, i64 size, i64 price) const {
  const MarketState& mk = market_or_throw(m, "market", 0);
  const i128 v = div_s_.floor(value_v(mk, size, price));
  return to_i64_checked(v, "value");
}

void Engine::set_value_scale(int new_d) {
  const int delta = new_d - value_decimals_;
  if (delta < 0) return;
  const i64 factor = pow10_i64(delta);
  value_decimals_ = new_d;
  scale_s_ = pow10_i64(new_d - money_decimals_);
  div_s_ = ConstantDivider(scale_s_);
  div_sr_ = ConstantDivider(scale_s_ * kRateScale);
  for (MarketState& mk : markets_) {
    mk.k += delta;
    mk.pow10k = pow10_i64(mk.k);
    for (std::size_t j = 0; j < mk.caps_v.size(); ++j)
      mk.caps_v[j] = static_cast<i128>(mk.tiers[j].max_notional) * scale_s_;
  }
  if (factor != 1)
    for (AccountHot& h : acc_) {
      h.cache.u *= factor;
      h.cache.mm *= factor;
      h.cache.im *= factor;
    }
}

MarketId Engine::add_market(const MarketSpec& spec) {
  if (spec.symbol.empty()) throw ConfigError("symbol must not be empty");
  if (!valid_utf8(spec.symbol)) throw ConfigError("symbol must be valid UTF-8");
  for (const MarketState& mk : markets_)
    if (mk.spec.symbol == spec.symbol) throw ConfigError("symbol '" + spec.symbol + "' is already a market");
  if (markets_.size() >= kMaxMarkets) throw ConfigError("at most 1024 markets are supported");
  if (spec.qty_decimals < 0 || spec.qty_decimals > 18) throw ConfigError("qty_decimals must be between 0 and 18");
  if (spec.price_decimals < 0 || spec.price_decimals > 18) throw ConfigError("price_decimals must be between 0 and 18");
  const int mark_decimals = spec.mark_decimals < 0 ? spec.price_decimals : spec.mark_decimals;
  if (spec.mark_decimals < -1 || mark_decimals < spec.price_decimals || mark_decimals > 18)
    throw ConfigError("mark_decimals must be between price_decimals (" + std::to_string(spec.price_decimals) +
                      ") and 18 (got " + std::to_string(spec.mark_decimals) + ")");
  // The engine's price unit is the mark's: values are exact at every mark.
  const std::string price_field = mark_decimals == spec.price_decimals ? "price_decimals" : "mark_decimals";
  const int d = spec.qty_decimals + mark_decimals;
  if (d - money_decimals_ > kMaxExtraValueDecimals)
    throw ConfigError("qty_decimals + " + price_field + " may exceed money_decimals by at most 8 (got " +
                      std::to_string(spec.qty_decimals) + " + " + std::to_string(mark_decimals) +
                      " with money_decimals " + std::to_string(money_decimals_) + ")");
  if (spec.liquidation_fee_rate < 0 || spec.liquidation_fee_rate > kRateScale)
    throw ConfigError("liquidation_fee must be between 0 and 1");
  // Values are kept in units of 10^-value_decimals: every market's 10^(value_decimals - its
  // qty + price decimals) must fit 64 bits, this one's and the others' after the scale moves.
  const int new_value_decimals = std::max(value_decimals_, d);
  for (const MarketState& other : markets_) {
    const int other_d = other.spec.qty_decimals + other.spec.mark_decimals;
    if (new_value_decimals - std::min(d, other_d) > kMaxValueScaleDecimals)
      throw ConfigError("qty_decimals + " + price_field + " (" + std::to_string(d) + ") may differ from market '" +
                        other.spec.symbol + "''s (" + std::to_string(other_d) + ") by at most " +
                        std::to_string(kMaxValueScaleDecimals) +
                        " once money_decimals is counted (values would need 10^" +
                        std::to_string(new_value_decimals - std::min(d, other_d)) + " per lot-tick)");
  }
  if (new_value_decimals - d > kMaxValueScaleDecimals)
    throw ConfigError("qty_decimals + " + price_field + " (" + std::to_string(d) + ") may be at most " +
                      std::to_string(kMaxValueScaleDecimals) + " below money_decimals (" +
                      std::to_string(money_decimals_) + ")");
  MarketState mk;
  mk.spec = spec;
  mk.spec.mark_decimals = mark_decimals;
  mk.tick_units = pow10_i64(mark_decimals - spec.price_decimals);
  mk.tiers = build_tiers(spec);  // throws ConfigError before anything changes
  set_value_scale(std::max(value_decimals_, d));
  mk.k = value_decimals_ - d;
  mk.pow10k = pow10_i64(mk.k);
  for (const Tier& t : mk.tiers) mk.caps_v.push_back(static_cast<i128>(t.max_notional) * scale_s_);
  markets_.push_back(std::move(mk));
  return static_cast<MarketId>(markets_.size() - 1);
}

const Engine::MarketState& Engine::market_or_throw(MarketId m, const char* field, std::size_t row) const {
  if (m < 0 || static_cast<std::size_t>(m) >= markets_.size())
    throw UnknownId(std::string(field) + "[" + std::to_string(row) + "]: unknown market id " + std::to_string(m));
  return markets_[static_cast<std::size_t>(m)];
}

const MarketSpec& Engine::market_spec(MarketId m) const { return market_or_throw(m, "market", 0).spec; }
const std::vector<Tier>& Engine::market_tiers(MarketId m) const { return market_or_throw(m, "market", 0).tiers; }
i64 Engine::mark(MarketId m) const { return market_or_throw(m, "market", 0).mark; }

i128 Engine::net_size(MarketId m) const {
  const MarketState& mk = market_or_throw(m, "market", 0);
  i128 net = 0;
  for (std::uint32_t a : mk.accounts) net += pos_size_[find_slot(a, m)];
  return net;
}

i128 Engine::value_v(const MarketState& mk, i64 size, i64 price) const {
  return static_cast<i128>(size) * price * mk.pow10k;
}

i64 Engine::value_money(const MarketState& mk, i64 size, i64 price) const {
  return static_cast<i64>(div_s_.floor(value_v(mk, size, price)));
}

// Whether |size| * price stays within kMaxNotional money units: the bound that keeps every
// per-account sum inside 128 bits.
bool Engine::value_in_range(const MarketState& mk, i64 abs_size, i64 price) const {
  if (abs_size == 0 || price == 0) return true;
  const i128 limit = static_cast<i128>(kMaxNotional) * scale_s_;
  // abs_size * price * 10^k <= limit: multiplied out when the product fits 128 bits (a lot
  // value below 2^63, as nearly always; a bulk load tests two per row), else tested without
  // overflow by dividing the limit (a 128-bit division).
  const i128 per_lot = static_cast<i128>(price) * mk.pow10k;
  if (per_lot > 0 && per_lot < (i128{1} << 63)) return static_cast<i128>(abs_size) * per_lot <= limit;
  return static_cast<i128>(abs_size) <= limit / per_lot;
}

void Engine::check_value_range(const MarketState& mk, i64 abs_size, i64 price, const std::string& where) const {
  if (!value_in_range(mk, abs_size, price))
    throw ArithmeticOverflow(where + ": the notional of " + std::to_string(abs_size) + " lots at " +
                             std::to_string(price) + " ticks in market '" + mk.spec.symbol +
                             "' exceeds 2^62 money units");
}

std::uint32_t Engine::account_index_or_throw(i64 id, const char* field, std::size_t row) const {
  std::uint32_t a = index_.find(id, acc_id_);
  if (a == AccountIndex::kNone)
    throw UnknownId(std::string(field) + "[" + std::to_string(row) + "]: unknown account id " + std::to_string(id));
  return a;
}

i64 Engine::balance(i64 account_id) const { return acc_[account_index_or_throw(account_id, "account", 0)].balance; }

// Grows a column to hold `needed` elements: exactly on the first bulk call (so a loaded book
// carries no slack), by 1.5x afterwards (so repeated small calls stay amortized O(1)).
template <class T>
static void reserve_for(std::vector<T>& v, std::size_t needed) {
  if (needed <= v.capacity()) return;
  v.reserve(std::max(needed, v.capacity() + v.capacity() / 2));
}

void Engine::reserve_accounts(std::size_t extra) {
  const std::size_t needed = acc_id_.size() + extra;
  reserve_for(acc_id_, needed);
  reserve_for(acc_, needed);
  reserve_for(acc_cap_, needed);
  index_.reserve(needed, acc_id_);
}

void Engine::reserve_positions(std::size_t extra_slots) {
  const std::size_t needed = pos_size_.size() + extra_slots;
  reserve_for(pos_size_, needed);
  reserve_for(pos_entry_, needed);
  reserve_for(pos_market_, needed);
  reserve_for(pos_mslot_, needed);
}

std::uint32_t Engine::create_account(i64 id) {
  if (acc_id_.size() >= AccountIndex::kNone - 1) throw InvalidInput("too many accounts");
  const auto a = static_cast<std::uint32_t>(acc_id_.size());
  acc_id_.push_back(id);
  acc_.push_back(AccountHot{});
  acc_cap_.push_back(0);
  index_.insert(id, a, acc_id_);
  return a;
}

// Makes room for `extra` more positions in account a's block, moving the block to the end
// of the columns if it is full.
void Engine::ensure_capacity(std::uint32_t a, std::uint32_t extra, bool exact_fit) {
  const std::uint32_t count = acc_[a].count;
  if (count + extra <= acc_cap_[a]) return;
  const std::size_t new_cap = exact_fit
                                  ? std::size_t{count} + extra
                                  : std::max<std::size_t>({4, std::size_t{count} * 2, std::size_t{count} + extra});
  const std::size_t start = pos_size_.size();
  if (start + new_cap >= kNoSlot) throw InvalidInput("too many position slots (2^32)");
  reserve_positions(new_cap);
  pos_size_.resize(start + new_cap, 0);
  pos_entry_.resize(start + new_cap, 0);
  pos_market_.resize(start + new_cap, kNoMarket);
  pos_mslot_.resize(start + new_cap, kNoSlot);
  const std::uint32_t old = acc_[a].start;
  for (std::uint32_t i = 0; i < count; ++i) {
    pos_size_[start + i] = pos_size_[old + i];
    pos_entry_[start + i] = pos_entry_[old + i];
    pos_market_[start + i] = pos_market_[old + i];
    pos_mslot_[start + i] = pos_mslot_[old + i];
    pos_market_[old + i] = kNoMarket;
  }
  abandoned_slots_ += acc_cap_[a];
  acc_[a].start = static_cast<std::uint32_t>(start);
  acc_cap_[a] = static_cast<std::uint32_t>(new_cap);
}

// Rewrites the columns in account order with each block at its exact size once abandoned
// blocks make up more than half of them. Amortized O(1) per moved block.
void Engine::compact_if_wasteful() {
  const std::size_t total = pos_size_.size();
  if (abandoned_slots_ < 4096 || abandoned_slots_ * 2 < total) return;
  std::vector<i64> size, entry;
  std::vector<std::uint16_t> market;
  std::vector<std::uint32_t> mslot;
  size.reserve(live_positions_);
  entry.reserve(live_positions_);
  market.reserve(live_positions_);
  mslot.reserve(live_positions_);
  for (std::size_t a = 0; a < acc_id_.size(); ++a) {
    const std::uint32_t b = acc_[a].start, n = acc_[a].count;
    acc_[a].start = static_cast<std::uint32_t>(size.size());
    acc_cap_[a] = n;
    for (std::uint32_t s = b; s < b + n; ++s) {
      size.push_back(pos_size_[s]);
      entry.push_back(pos_entry_[s]);
      market.push_back(pos_market_[s]);
      mslot.push_back(pos_mslot_[s]);
    }
  }
  pos_size_.swap(size);
  pos_entry_.swap(entry);
  pos_market_.swap(market);
  pos_mslot_.swap(mslot);
  abandoned_slots_ = 0;
}

void Engine::set_position_at(std::uint32_t a, MarketId m, std::uint32_t slot, i64 size, i64 entry) {
  note_changed(a);
  MarketState& mk = markets_[static_cast<std::size_t>(m)];
  std::uint32_t s = slot;
  Sums& cache = acc_[a].cache;
  if (s != kNoSlot) {
    const Contribution old = contribution(mk, pos_size_[s], pos_entry_[s], mk.valued_mark);
    cache.u -= old.u;
    cache.mm -= old.mm;
    cache.im -= old.im;
  }
  if (size == 0) {
    if (s == kNoSlot) return;
    // remove from the market's account list (swap-remove, fixing the moved entry)
    const std::uint32_t ms = pos_mslot_[s];
    const std::uint32_t moved_account = mk.accounts.back();
    mk.accounts[ms] = moved_account;
    mk.accounts.pop_back();
    if (moved_account != a) pos_mslot_[find_slot(moved_account, m)] = ms;
    // The next close in this market moves the new last account: start loading it (a crash
    // closes many positions of one market in a row, and these lookups are cache misses).
    if (!mk.accounts.empty()) __builtin_prefetch(&acc_[mk.accounts.back()]);
    // remove from the account's block (swap with its last position)
    const std::uint32_t last = acc_[a].start + acc_[a].count - 1;
    pos_size_[s] = pos_size_[last];
    pos_entry_[s] = pos_entry_[last];
    pos_market_[s] = pos_market_[last];
    pos_mslot_[s] = pos_mslot_[last];
    pos_market_[last] = kNoMarket;
    pos_size_[last] = 0;
    pos_entry_[last] = 0;
    --acc_[a].count;
    --live_positions_;
    return;
  }
  if (s == kNoSlot) {
    ensure_capacity(a, 1, false);
    s = acc_[a].start + acc_[a].count;
    ++acc_[a].count;
    ++live_positions_;
    pos_market_[s] = static_cast<std::uint16_t>(m);
    pos_mslot_[s] = static_cast<std::uint32_t>(mk.accounts.size());
    mk.accounts.push_back(a);
  }
  pos_size_[s] = size;
  pos_entry_[s] = entry;
  const i64 abs_size = size < 0 ? -size : size;
  mk.max_abs_size = std::max(mk.max_abs_size, abs_size);
  const Contribution now = contribution(mk, size, entry, mk.valued_mark);
  cache.u += now.u;
  cache.mm += now.mm;
  cache.im += now.im;
}

std::size_t Engine::memory_bytes() const {
  std::size_t b = 0;
  b += acc_id_.capacity() * sizeof(i64) + acc_.capacity() * sizeof(AccountHot);
  b += acc_cap_.capacity() * sizeof(std::uint32_t);
  b += index_.memory_bytes();
  b += pos_size_.capacity() * sizeof(i64) + pos_entry_.capacity() * sizeof(i64);
  b += pos_market_.capacity() * sizeof(std::uint16_t) + pos_mslot_.capacity() * sizeof(std::uint32_t);
  for (const MarketState& mk : markets_) b += mk.accounts.capacity() * sizeof(std::uint32_t) + sizeof(MarketState);
  return b;
}

}  // namespace deleverage
