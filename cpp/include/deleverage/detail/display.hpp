// Display conversions of exact money values into float64 human units, in one place: the
// margin check's float columns and the Python boundary's converters use the same formulas,
// so a float report is the same whichever pass produced it.
#pragma once
#include <limits>

#include "deleverage/fixed_point.hpp"

namespace deleverage::detail {

// 10^d as doubles, exact for 0 <= d <= 22.
inline constexpr double kPow10Double[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                          1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// maintenance / equity: +inf when equity <= 0 and something is owed, 0 for an empty account.
inline double margin_ratio(i64 equity, i64 maintenance) {
  if (equity > 0) return static_cast<double>(maintenance) / static_cast<double>(equity);
  return (maintenance > 0 || equity < 0) ? std::numeric_limits<double>::infinity() : 0.0;
}

}  // namespace deleverage::detail
