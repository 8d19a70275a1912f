#include "deleverage/water_fill.hpp"

#include <algorithm>
#include <numeric>

namespace deleverage {

std::vector<i64> allocate_capped_pro_rata(i64 budget, const std::vector<i64>& weight, const std::vector<i64>& cap,
                                          const std::vector<i64>& ids) {
  const std::size_t n = weight.size();
  if (cap.size() != n || ids.size() != n) throw InvalidInput("weight, cap and ids must have the same length");
  i128 cap_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (weight[i] < 0) throw InvalidInput("weight[" + std::to_string(i) + "] must not be negative");
    if (cap[i] < 0) throw InvalidInput("cap[" + std::to_string(i) + "] must not be negative");
    if (weight[i] > 0) cap_sum += cap[i];
  }
  if (budget < 0 || budget > cap_sum)
    throw InvalidInput("budget " + std::to_string(budget) + " must be between 0 and the total capacity " +
                       to_string_i128(cap_sum));
  std::vector<i64> x(n, 0);
  if (budget == 0) return x;

  // Entries saturate in order of cap/weight: those below the final level h take their cap.
  std::vector<std::size_t> order;
  order.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    if (weight[i] > 0 && cap[i] > 0) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const i128 l = static_cast<i128>(cap[a]) * weight[b], r = static_cast<i128>(cap[b]) * weight[a];
    return l != r ? l < r : ids[a] < ids[b];
  });
  i128 left = budget, w_left = 0;
  for (std::size_t i : order) w_left += weight[i];
  std::size_t k = 0;
  for (; k < order.size(); ++k) {
    const std::size_t i = order[k];
    if (static_cast<i128>(cap[i]) * w_left > left * weight[i]) break;  // cap above the level: not saturated
    x[i] = cap[i];
    left -= cap[i];
    w_left -= weight[i];
  }
  if (left == 0 || k == order.size()) return x;
  // the rest share `left` in proportion to weight
  std::vector<std::pair<i128, std::size_t>> remainders;
  i128 given = 0;
  for (std::size_t j = k; j < order.size(); ++j) {
    const std::size_t i = order[j];
    const i128 num = left * weight[i];
    x[i] = static_cast<i64>(num / w_left);
    given += x[i];
    remainders.push_back({num % w_left, i});
  }
  const std::size_t extra = static_cast<std::size_t>(left - given);
  if (extra > 0) {
    auto by_remainder = [&](const std::pair<i128, std::size_t>& a, const std::pair<i128, std::size_t>& b) {
      return a.first != b.first ? a.first > b.first : ids[a.second] < ids[b.second];
    };
    std::nth_element(remainders.begin(), remainders.begin() + static_cast<std::ptrdiff_t>(extra - 1), remainders.end(),
                     by_remainder);
    for (std::size_t j = 0; j < extra; ++j) ++x[remainders[j].second];
  }
  return x;
}

}  // namespace deleverage
