// The market table: every market's spec, tiers, marks and pool, and the value scale they
// share. Part of the Engine's state (the Engine composes it); internal to the core, not an
// embedding API of its own.
//
// Values are kept in units of 10^-D money ("value units", D = value_decimals() >= the money
// decimals): value_V = q * p * 10^k for a market whose qty + mark decimals are D - k, so that
// every market's values are exact integers in one unit. scale() = S = 10^(D - money_decimals).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "deleverage/detail/serial.hpp"
#include "deleverage/errors.hpp"
#include "deleverage/fixed_point.hpp"
#include "deleverage/market.hpp"

namespace deleverage {

// One market's configuration and mark state.
struct MarketState {
  MarketSpec spec;
  std::vector<Tier> tiers;
  std::vector<i128> caps_v;  // tier caps in 10^-D units (cap * S)
  int k = 0;                 // value_V = q * p * 10^k
  i64 pow10k = 1;
  i64 tick_units = 1;  // price units per order tick: 10^(mark_decimals - price_decimals)
  i64 mark = 0;
  i64 valued_mark = 0;             // the mark the cached account sums reflect
  i64 max_abs_size = 0;            // upper bound on |q| of any position in the market
  i64 previous_mark = 0;           // the mark before the last set_marks that changed it
  int pool = 0;                    // insurance pool paying this market's deficits
  std::uint64_t mark_updates = 0;  // set_marks calls that changed this market's mark
};

class MarketTable {
 public:
  // money_decimals in [0, 12] (ConfigError otherwise).
  explicit MarketTable(int money_decimals);

  // Validates `spec` against the table (Engine::add_market documents the rules) and appends
  // it. When the market needs a finer value unit, every market is rescaled and `rescale` is
  // set to the factor by which value units grew: the caller multiplies every sum it keeps in
  // value units by it (1: nothing to do). Throws ConfigError with nothing changed.
  MarketId add(const MarketSpec& spec, i64& rescale);

  std::size_t size() const { return markets_.size(); }
  bool empty() const { return markets_.empty(); }
  MarketState& operator[](std::size_t m) { return markets_[m]; }
  const MarketState& operator[](std::size_t m) const { return markets_[m]; }
  auto begin() { return markets_.begin(); }
  auto end() { return markets_.end(); }
  auto begin() const { return markets_.begin(); }
  auto end() const { return markets_.end(); }
  // UnknownId naming `field[row]` for an id that is not a market.
  const MarketState& market_or_throw(MarketId m, const char* field, std::size_t row) const;
  MarketState& market_or_throw(MarketId m, const char* field, std::size_t row);

  // ---- scales and values ----
  int money_decimals() const { return money_decimals_; }
  int value_decimals() const { return value_decimals_; }
  i64 scale() const { return scale_s_; }                     // S
  const ConstantDivider& div_s() const { return div_s_; }    // by S
  const ConstantDivider& div_sr() const { return div_sr_; }  // by S * kRateScale
  // Value of `size` lots at `price` in value units (exact).
  static i128 value_v(const MarketState& mk, i64 size, i64 price) {
    return static_cast<i128>(size) * price * mk.pow10k;
  }
  // The same in money units, rounded down.
  i64 value_money(const MarketState& mk, i64 size, i64 price) const {
    return static_cast<i64>(div_s_.floor(value_v(mk, size, price)));
  }
  // Engine::value_at: UnknownId for an unknown market, ArithmeticOverflow past int64.
  i64 value_at(MarketId m, i64 size, i64 price) const;
  // Whether |size| * price stays within kMaxNotional money units (the bound that keeps every
  // per-account sum inside 128 bits); check_value_range throws ArithmeticOverflow naming `where`.
  bool value_in_range(const MarketState& mk, i64 abs_size, i64 price) const;
  void check_value_range(const MarketState& mk, i64 abs_size, i64 price, const std::string& where) const;
  // InvalidInput naming `field[row]`: `price` is not a whole order tick of the market.
  [[noreturn]] static void throw_off_tick(const MarketState& mk, i64 price, const char* field, std::size_t row);

  std::size_t memory_bytes() const { return markets_.size() * sizeof(MarketState); }

  // ---- snapshot and state hash (docs/durability.md) ----
  // The markets section of the payload.
  template <class Out>
  void write(Out& w) const {
    w.template put<std::uint32_t>(static_cast<std::uint32_t>(markets_.size()));
    for (const MarketState& mk : markets_) {
      detail::write_market_spec(w, mk.spec);
      w.template put<i64>(mk.mark);
      w.template put<i64>(mk.previous_mark);
      w.template put<i64>(mk.valued_mark);
      w.template put<std::int32_t>(mk.pool);
    }
  }
  // Reads the markets section into an empty table (each spec validated as add() does).
  // Returns each market's pool as written, for the caller to check against the fund's pools
  // (read after the markets) and then set with set_pools.
  std::vector<std::int32_t> read(detail::Reader& r, std::uint32_t version, std::size_t max_markets);
  void set_pools(const std::vector<std::int32_t>& pools);
  // The markets' part of the state hash.
  void hash(detail::Hasher& g) const;

 private:
  void set_value_scale(int new_d, i64& rescale);

  std::vector<MarketState> markets_;
  int money_decimals_;
  int value_decimals_;      // D
  i64 scale_s_ = 1;         // S = 10^(D - money_decimals)
  ConstantDivider div_s_;   // by S
  ConstantDivider div_sr_;  // by S * kRateScale
};

}  // namespace deleverage
