#include "deleverage/market.hpp"

#include <limits>
#include <string>

namespace deleverage {

namespace {
void check_rate(i64 rate, const std::string& field) {
  if (rate < 0 || rate > kRateScale)
    throw ConfigError(field + " must be between 0 and 1 (got " + std::to_string(rate) + " x 1e-8)");
}
}  // namespace

std::vector<Tier> build_tiers(const MarketSpec& spec) {
  std::vector<TierSpec> specs = spec.tiers;
  if (specs.empty()) {
    TierSpec flat;
    flat.max_notional = std::numeric_limits<i64>::max();
    flat.maintenance_rate = spec.maintenance_rate;
    flat.initial_rate = spec.initial_rate;
    specs.push_back(flat);
  }
  std::vector<Tier> tiers;
  tiers.reserve(specs.size());
  for (std::size_t j = 0; j < specs.size(); ++j) {
    const TierSpec& t = specs[j];
    const std::string where =
        specs.size() == 1 && spec.tiers.empty() ? std::string("") : "tiers[" + std::to_string(j) + "].";
    check_rate(t.maintenance_rate, where + "maintenance_margin");
    check_rate(t.initial_rate, where + "initial_margin");
    if (t.initial_rate < t.maintenance_rate)
      throw ConfigError(where + "initial_margin must be at least " + where + "maintenance_margin");
    const bool last = j + 1 == specs.size();
    Tier out{};
    out.max_notional = last ? std::numeric_limits<i64>::max() : t.max_notional;
    out.maintenance_rate = t.maintenance_rate;
    out.initial_rate = t.initial_rate;
    if (!last && t.max_notional <= 0) throw ConfigError(where + "max_notional must be positive");
    if (j > 0) {
      const Tier& prev = tiers.back();
      if (!last && out.max_notional <= prev.max_notional)
        throw ConfigError(where + "max_notional must be larger than the previous tier's");
      if (out.maintenance_rate < prev.maintenance_rate || out.initial_rate < prev.initial_rate)
        throw ConfigError(where + "rates must not decrease from one tier to the next");
      out.maintenance_deduction = prev.maintenance_deduction +
                                  static_cast<i128>(prev.max_notional) * (out.maintenance_rate - prev.maintenance_rate);
      out.initial_deduction =
          prev.initial_deduction + static_cast<i128>(prev.max_notional) * (out.initial_rate - prev.initial_rate);
    } else {
      out.maintenance_deduction = 0;
      out.initial_deduction = 0;
    }
    if (t.maintenance_amount >= 0 && static_cast<i128>(t.maintenance_amount) * kRateScale != out.maintenance_deduction)
      throw ConfigError(where + "maintenance_amount " + std::to_string(t.maintenance_amount) +
                        " does not make the requirement continuous (expected " +
                        to_string_i128(out.maintenance_deduction) + " / 1e8 money units)");
    tiers.push_back(out);
  }
  return tiers;
}

std::string to_string_i128(i128 v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  u128 u = neg ? static_cast<u128>(-(v + 1)) + 1 : static_cast<u128>(v);
  std::string s;
  while (u > 0) {
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(u % 10)));
    u /= 10;
  }
  return neg ? "-" + s : s;
}

}  // namespace deleverage
