#include "deleverage/policy.hpp"

#include <string>

#include "deleverage/errors.hpp"

namespace deleverage {

const char* policy_name(Policy p) {
  const auto i = static_cast<std::size_t>(p);
  return i < kPolicyNames.size() ? kPolicyNames[i].data() : "?";
}

Policy parse_policy(std::string_view name) {
  for (std::size_t i = 0; i < kPolicyNames.size(); ++i)
    if (kPolicyNames[i] == name) return static_cast<Policy>(i);
  std::string known;
  for (std::size_t i = 0; i < kPolicyNames.size(); ++i)
    known += std::string(i == 0 ? "" : i + 1 == kPolicyNames.size() ? " or " : ", ") + std::string(kPolicyNames[i]);
  throw InvalidInput("policy: unknown policy '" + std::string(name) + "' (expected " + known + ")");
}

bool is_kernel_policy(Policy p) { return p != Policy::FundingIndex && p != Policy::None; }

}  // namespace deleverage
