// Exact integer helpers: 128-bit products, floor/ceil division, checked narrowing, and a
// divider by a run-time constant that avoids a hardware division on the hot path.
#pragma once
#include <cstdint>
#include <limits>
#include <string>

#include "deleverage/errors.hpp"

namespace deleverage {

using i64 = std::int64_t;
using i128 = __int128;
using u64 = std::uint64_t;
using u128 = unsigned __int128;

// The rate scale: margin and fee rates are integers in units of 1e-8.
inline constexpr i64 kRateScale = 100'000'000;
// Every position's value, at entry and at every mark, must stay within this many money units.
inline constexpr i64 kMaxNotional = i64{1} << 62;

// 10^e for 0 <= e <= 18 (larger e overflows: callers bound it).
inline constexpr i64 pow10_i64(int e) {
  i64 r = 1;
  for (int i = 0; i < e; ++i) r *= 10;
  return r;
}

// Whether v is representable as int64.
inline bool fits_i64(i128 v) { return v >= std::numeric_limits<i64>::min() && v <= std::numeric_limits<i64>::max(); }

// floor(a / b) for b > 0.
inline i128 floor_div(i128 a, i128 b) {
  i128 q = a / b;
  if ((a % b != 0) && (a < 0)) --q;
  return q;
}
// ceil(a / b) for b > 0.
inline i128 ceil_div(i128 a, i128 b) {
  i128 q = a / b;
  if ((a % b != 0) && (a > 0)) ++q;
  return q;
}
// a / b truncated toward zero (as C++ division), with a 64-bit hardware division when both
// fit: a 128-bit division is a ~100-cycle library call.
inline i128 trunc_div(i128 a, i128 b) {
  if (fits_i64(a) && fits_i64(b) && !(a == std::numeric_limits<i64>::min() && b == -1))
    return static_cast<i64>(a) / static_cast<i64>(b);
  return a / b;
}

// floor(a / b) for b > 0 using trunc_div's 64-bit fast path.
inline i128 floor_div_fast(i128 a, i128 b) {
  const i128 q = trunc_div(a, b);
  return (q * b != a && a < 0) ? q - 1 : q;
}

// ceil(a * b / c) exactly for a < 2^64, 0 <= b < c < 2^127, where a * b may not fit in 128
// bits (the result is below a). The 192-bit product is divided bit by bit: 192 steps, for
// rare calls such as sizing a partial liquidation.
inline std::uint64_t mul_div_ceil_below(std::uint64_t a, u128 b, u128 c) {
  const u128 mask64 = (u128{1} << 64) - 1;
  // a * b as three 64-bit limbs: p2 p1 p0
  const u128 lo = static_cast<u128>(a) * (b & mask64);
  const u128 hi = static_cast<u128>(a) * (b >> 64);
  const u128 mid = (lo >> 64) + (hi & mask64);
  const std::uint64_t limb[3] = {static_cast<std::uint64_t>(lo), static_cast<std::uint64_t>(mid),
                                 static_cast<std::uint64_t>((hi >> 64) + (mid >> 64))};
  u128 r = 0, q = 0;  // r < c < 2^127, so 2r + 1 fits
  for (int i = 191; i >= 0; --i) {
    r = (r << 1) | ((limb[i / 64] >> (i % 64)) & 1u);
    q <<= 1;
    if (r >= c) {
      r -= c;
      q |= 1;
    }
  }
  return static_cast<std::uint64_t>(q) + (r != 0 ? 1 : 0);
}

// floor/ceil for any non-zero b.
inline i128 floor_div_signed(i128 a, i128 b) { return b < 0 ? floor_div(-a, -b) : floor_div(a, b); }
inline i128 ceil_div_signed(i128 a, i128 b) { return b < 0 ? ceil_div(-a, -b) : ceil_div(a, b); }

[[noreturn]] [[gnu::cold]] [[gnu::noinline]] inline void throw_does_not_fit(const char* what) {
  throw ArithmeticOverflow(std::string(what) + " does not fit in 64 bits");
}

// Narrow to int64 or throw ArithmeticOverflow naming what overflowed.
inline i64 to_i64_checked(i128 v, const char* what) {
  if (!fits_i64(v)) [[unlikely]]
    throw_does_not_fit(what);
  return static_cast<i64>(v);
}

// Division by a constant d >= 1 fixed at construction (Granlund & Montgomery 1994, fig. 4.1):
// one multiply-high and two shifts replace a 40-cycle division in the per-account loop.
// Exact for every 64-bit unsigned numerator; wider numerators fall back to 128-bit division.
class ConstantDivider {
 public:
  ConstantDivider() : ConstantDivider(1) {}
  explicit ConstantDivider(i64 d) : d_(d) {
    int l = 0;
    while ((u128{1} << l) < static_cast<u128>(d)) ++l;  // l = ceil(log2 d)
    magic_ = static_cast<u64>(((u128{1} << 64) * ((u128{1} << l) - static_cast<u128>(d))) / static_cast<u128>(d) + 1);
    shift1_ = l > 0 ? 1 : 0;
    shift2_ = l > 0 ? l - 1 : 0;
  }
  i64 divisor() const { return d_; }

  // n / d for any unsigned 64-bit n.
  u64 div_u64(u64 n) const {
    u64 t = static_cast<u64>((static_cast<u128>(magic_) * n) >> 64);
    return (t + ((n - t) >> shift1_)) >> shift2_;
  }
  // floor(a / d) and ceil(a / d) for any a.
  i128 floor(i128 a) const {
    if (a >= 0 && a < (i128{1} << 63)) return static_cast<i128>(div_u64(static_cast<u64>(a)));
    if (a < 0 && a > -(i128{1} << 63)) {
      // floor(a/d) = -ceil(-a/d)
      u64 n = static_cast<u64>(-a);
      return -static_cast<i128>(div_u64(n + static_cast<u64>(d_) - 1));
    }
    return floor_div(a, d_);
  }
  i128 ceil(i128 a) const {
    if (a >= 0 && a < (i128{1} << 63))
      return static_cast<i128>(div_u64(static_cast<u64>(a) + static_cast<u64>(d_) - 1));
    if (a < 0 && a > -(i128{1} << 63)) return -static_cast<i128>(div_u64(static_cast<u64>(-a)));
    return ceil_div(a, d_);
  }

 private:
  i64 d_;
  u64 magic_ = 0;
  int shift1_ = 0;
  int shift2_ = 0;
};

// Decimal text of a 128-bit integer (for messages: std::to_string has no i128 overload).
std::string to_string_i128(i128 v);

}  // namespace deleverage
