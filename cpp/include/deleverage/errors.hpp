// Exceptions thrown by the core. Each has a stable type that the Python bindings map to
// deleverage.errors; messages name the offending field and index.
#pragma once
#include <stdexcept>
#include <string>

namespace deleverage {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// A market or engine configuration that cannot be used (bad decimals, rates, tiers).
class ConfigError : public Error {
  using Error::Error;
};
// Bad arguments to an operation: NaN-free by construction, but negative, zero, off-range,
// mismatched lengths, duplicates, an unbalanced book.
class InvalidInput : public Error {
  using Error::Error;
};
// A result would not fit the fixed-point range. Never wraps.
class ArithmeticOverflow : public Error {
  using Error::Error;
};
// An account or market id the engine does not know.
class UnknownId : public Error {
  using Error::Error;
};
// A withdrawal that would leave an account below its initial margin.
class InsufficientMargin : public Error {
  using Error::Error;
};
// A snapshot or journal that cannot be read back.
class CorruptSnapshot : public Error {
  using Error::Error;
};
// check_invariants() found conservation, zero net size or internal consistency broken.
class InvariantViolation : public Error {
  using Error::Error;
};

}  // namespace deleverage
