// The waterfall's exact water-filling: a budget over winners in proportion to weights, each
// capped (used by its pro-rata and funding-index policies). The policy lab's kernel, with
// every policy and a float mode, is allocate.hpp; both live in cpp/src/allocation/.
#pragma once
#include <vector>

#include "deleverage/fixed_point.hpp"

namespace deleverage {

// Water-filling pro-rata: x_i = min(cap_i, h * weight_i) with the common level h chosen so
// that sum(x) == budget exactly. Integer rounding: every uncapped x_i is floor(h * w_i) and the
// units left over go one each to the largest fractional parts (ties: smaller id). Requires
// 0 <= budget <= sum(cap) and weight_i, cap_i >= 0; throws InvalidInput otherwise.
std::vector<i64> allocate_capped_pro_rata(i64 budget, const std::vector<i64>& weight, const std::vector<i64>& cap,
                                          const std::vector<i64>& ids);

}  // namespace deleverage
