// Market configuration: decimals, margin rates, the optional tier table (risk limits).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "deleverage/fixed_point.hpp"

namespace deleverage {

using MarketId = std::int32_t;

// One band of a tier table. Rates are in units of 1e-8 (kRateScale).
struct TierSpec {
  i64 max_notional = 0;  // money units, inclusive upper bound; ignored for the last tier
  i64 maintenance_rate = 0;
  i64 initial_rate = 0;
  // Optional published deduction ("maintenance amount", money units). When >= 0 it must
  // equal the value that makes the requirement continuous; -1 means "compute it".
  i64 maintenance_amount = -1;
};

struct MarketSpec {
  std::string symbol;
  int qty_decimals = 0;          // a lot is 10^-qty_decimals base units
  int price_decimals = 0;        // the order tick is 10^-price_decimals quote units
  i64 maintenance_rate = 0;      // 1e-8 units (5% = 5'000'000); used when tiers is empty
  i64 initial_rate = 0;          // 1e-8 units; used when tiers is empty
  i64 liquidation_fee_rate = 0;  // 1e-8 units of the closed notional, in [0, kRateScale]
  std::vector<TierSpec> tiers;   // empty: one flat tier
  // Marks may be finer than the order tick: the engine's price unit is 10^-mark_decimals
  // quote units (every price in and out of the engine is in it); trade and entry prices must
  // be whole order ticks. -1 (the default here) means price_decimals; add_market stores the
  // resolved value. The Python API defaults to price_decimals + 4.
  int mark_decimals = -1;  // price_decimals .. 18
};

// A validated tier with its deductions in money x kRateScale units, so that
//   requirement_VR = notional_V * rate - deduction * S
// is continuous in notional across bands.
struct Tier {
  i64 max_notional;  // money units; INT64_MAX for the last tier
  i64 maintenance_rate;
  i64 initial_rate;
  i128 maintenance_deduction;  // money * kRateScale
  i128 initial_deduction;      // money * kRateScale
};

// Checks a spec and builds its tiers. Throws ConfigError naming the field and tier index.
std::vector<Tier> build_tiers(const MarketSpec& spec);

}  // namespace deleverage
