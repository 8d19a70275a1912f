// Small helpers shared by the C++ tests: one-element calls of the batch API.
#pragma once
#include "deleverage/engine.hpp"

namespace deleverage::testing {

inline void dep(Engine& e, i64 id, i64 amount) {
  const i64 ids[1] = {id}, amounts[1] = {amount};
  e.deposit(ids, amounts);
}

inline void mark(Engine& e, MarketId m, i64 price) {
  const MarketId ms[1] = {m};
  const i64 ps[1] = {price};
  e.set_marks(ms, ps);
}

}  // namespace deleverage::testing
