// The last-resort policies: one enum and one name table shared by the waterfall, the
// allocation kernel, the journal and (exported by the bindings) the Python layer.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

namespace deleverage {

// Who pays the last resort (docs/waterfall.md sections 5 and 6). The values are written into
// journals: new policies are appended, never renumbered.
enum class Policy : std::uint8_t {
  Queue = 0,
  ProRata = 1,
  FundingIndex = 2,  // haircut-only: pro-rata by position size inside the waterfall
  CappedProRata = 3,
  RiskAware = 4,
  MinMaxLots = 5,
  RandomWalk = 6,
  None = 7,  // no last resort: the executor closes everything, what the fund cannot pay is bad debt
};
inline constexpr int kPolicyCount = 8;

// Names by value.
inline constexpr std::array<std::string_view, kPolicyCount> kPolicyNames{
    "queue", "pro_rata", "funding_index", "capped_pro_rata", "risk_aware", "min_max_lots", "random_walk", "none"};

const char* policy_name(Policy p);
// The policy of that name; InvalidInput naming the known ones otherwise.
Policy parse_policy(std::string_view name);
// Whether the allocation kernel (allocate.hpp) runs the policy on its own: not funding_index
// (the waterfall's weighted pro-rata) nor none (nothing to allocate).
bool is_kernel_policy(Policy p);

}  // namespace deleverage
