// The market table: validation of new markets, the value scale, lookups and value helpers,
// and the markets' snapshot section and state hash.
#include "deleverage/market_table.hpp"

#include <algorithm>

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

MarketTable::MarketTable(int money_decimals) : money_decimals_(money_decimals) {
  if (money_decimals < 0 || money_decimals > 12)
    throw ConfigError("money_decimals must be between 0 and 12 (got " + std::to_string(money_decimals) + ")");
  value_decimals_ = money_decimals;
  scale_s_ = 1;
  div_s_ = ConstantDivider(1);
  div_sr_ = ConstantDivider(kRateScale);
}

void MarketTable::set_value_scale(int new_d, i64& rescale) {
  rescale = 1;
  const int delta = new_d - value_decimals_;
  if (delta < 0) return;
  rescale = pow10_i64(delta);
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
}

MarketId MarketTable::add(const MarketSpec& spec, i64& rescale) {
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
  set_value_scale(std::max(value_decimals_, d), rescale);
  mk.k = value_decimals_ - d;
  mk.pow10k = pow10_i64(mk.k);
  for (const Tier& t : mk.tiers) mk.caps_v.push_back(static_cast<i128>(t.max_notional) * scale_s_);
  markets_.push_back(std::move(mk));
  return static_cast<MarketId>(markets_.size() - 1);
}

const MarketState& MarketTable::market_or_throw(MarketId m, const char* field, std::size_t row) const {
  if (m < 0 || static_cast<std::size_t>(m) >= markets_.size())
    throw UnknownId(std::string(field) + "[" + std::to_string(row) + "]: unknown market id " + std::to_string(m));
  return markets_[static_cast<std::size_t>(m)];
}

MarketState& MarketTable::market_or_throw(MarketId m, const char* field, std::size_t row) {
  return const_cast<MarketState&>(std::as_const(*this).market_or_throw(m, field, row));
}

i64 MarketTable::value_at(MarketId m, i64 size, i64 price) const {
  const MarketState& mk = market_or_throw(m, "market", 0);
  const i128 v = div_s_.floor(value_v(mk, size, price));
  return to_i64_checked(v, "value");
}

// Whether |size| * price stays within kMaxNotional money units: the bound that keeps every
// per-account sum inside 128 bits.
bool MarketTable::value_in_range(const MarketState& mk, i64 abs_size, i64 price) const {
  if (abs_size == 0 || price == 0) return true;
  const i128 limit = static_cast<i128>(kMaxNotional) * scale_s_;
  // abs_size * price * 10^k <= limit: multiplied out when the product fits 128 bits (a lot
  // value below 2^63, as nearly always; a bulk load tests two per row), else tested without
  // overflow by dividing the limit (a 128-bit division).
  const i128 per_lot = static_cast<i128>(price) * mk.pow10k;
  if (per_lot > 0 && per_lot < (i128{1} << 63)) return static_cast<i128>(abs_size) * per_lot <= limit;
  return static_cast<i128>(abs_size) <= limit / per_lot;
}

void MarketTable::check_value_range(const MarketState& mk, i64 abs_size, i64 price, const std::string& where) const {
  if (!value_in_range(mk, abs_size, price))
    throw ArithmeticOverflow(where + ": the notional of " + std::to_string(abs_size) + " lots at " +
                             std::to_string(price) + " ticks in market '" + mk.spec.symbol +
                             "' exceeds 2^62 money units");
}

[[noreturn]] void MarketTable::throw_off_tick(const MarketState& mk, i64 price, const char* field, std::size_t row) {
  throw InvalidInput(std::string(field) + "[" + std::to_string(row) + "]: price " + std::to_string(price) +
                     " is not a whole order tick of market '" + mk.spec.symbol + "' (prices are in units of 10^-" +
                     std::to_string(mk.spec.mark_decimals) + ", the tick is 10^-" +
                     std::to_string(mk.spec.price_decimals) + ": a multiple of " + std::to_string(mk.tick_units) + ")");
}

std::vector<std::int32_t> MarketTable::read(detail::Reader& r, std::uint32_t version, std::size_t max_markets) {
  const std::size_t n_markets = r.count<std::uint32_t>(64, max_markets, "market count");
  std::vector<std::int32_t> pools(n_markets);
  for (std::size_t m = 0; m < n_markets; ++m) {
    i64 rescale = 1;
    add(detail::read_market_spec(r, version >= 3), rescale);  // validates the spec like any add_market
    MarketState& mk = markets_[m];
    mk.mark = r.get<i64>();
    mk.previous_mark = r.get<i64>();
    mk.valued_mark = r.get<i64>();
    pools[m] = r.get<std::int32_t>();
    if (mk.mark < 0 || mk.previous_mark < 0 || mk.valued_mark < 0)
      detail::corrupt("negative mark in market " + std::to_string(m));
  }
  return pools;
}

void MarketTable::set_pools(const std::vector<std::int32_t>& pools) {
  for (std::size_t m = 0; m < markets_.size(); ++m) markets_[m].pool = pools[m];
}

void MarketTable::hash(detail::Hasher& g) const {
  g.add(markets_.size());
  for (const MarketState& mk : markets_) {
    g.add(mk.spec.symbol.size());
    for (char ch : mk.spec.symbol) g.add(static_cast<unsigned char>(ch));
    g.add(static_cast<u64>(mk.spec.qty_decimals));
    g.add(static_cast<u64>(mk.spec.price_decimals));
    // (only when finer than the tick: states without finer marks keep their old hashes)
    if (mk.spec.mark_decimals != mk.spec.price_decimals) g.add(static_cast<u64>(mk.spec.mark_decimals) + (1ull << 32));
    g.add(static_cast<u64>(mk.spec.maintenance_rate));
    g.add(static_cast<u64>(mk.spec.initial_rate));
    g.add(static_cast<u64>(mk.spec.liquidation_fee_rate));
    g.add(mk.spec.tiers.size());
    for (const TierSpec& t : mk.spec.tiers) {
      g.add(static_cast<u64>(t.max_notional));
      g.add(static_cast<u64>(t.maintenance_rate));
      g.add(static_cast<u64>(t.initial_rate));
      g.add(static_cast<u64>(t.maintenance_amount));
    }
    g.add(static_cast<u64>(mk.mark));
    g.add(static_cast<u64>(mk.previous_mark));
    g.add(static_cast<u64>(mk.pool));
  }
}

}  // namespace deleverage
