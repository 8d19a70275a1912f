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

// floor(a / b) for b > 0 using trunc_div's 64-bit fast path. There the division's remainder
// tells whether it was exact, instead of a 128-bit product after the quotient is known.
inline i128 floor_div_fast(i128 a, i128 b) {
  if (fits_i64(a) && fits_i64(b) && !(a == std::numeric_limits<i64>::min() && b == -1)) {
    const i64 x = static_cast<i64>(a), y = static_cast<i64>(b);
    const i64 q = x / y;
    return (x % y != 0 && x < 0) ? q - 1 : q;
  }
  const i128 q = a / b;
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

// Division by a constant d >= 1 fixed at construction: one multiply-high and two shifts
// (Reciprocal64) replace a 40-cycle division in the per-account loop. Exact for every 64-bit
// unsigned numerator; wider numerators fall back to 128-bit division, except in round_i64
// and ceil_i64 (below).
// n / d for every 64-bit unsigned n by one multiply-high and two shifts (Granlund &
// Montgomery 1994, fig. 4.1), for a divisor d >= 1 fixed in advance.
struct Reciprocal64 {
  u64 magic = 1;
  int shift1 = 0, shift2 = 0;

  static Reciprocal64 of(u64 d) {
    int l = 0;
    while ((u128{1} << l) < static_cast<u128>(d)) ++l;  // l = ceil(log2 d)
    Reciprocal64 r;
    r.magic = static_cast<u64>(((u128{1} << 64) * ((u128{1} << l) - static_cast<u128>(d))) / static_cast<u128>(d) + 1);
    r.shift1 = l > 0 ? 1 : 0;
    r.shift2 = l > 0 ? l - 1 : 0;
    return r;
  }
  u64 div(u64 n) const {
    const u64 t = static_cast<u64>((static_cast<u128>(magic) * n) >> 64);
    return (t + ((n - t) >> shift1)) >> shift2;
  }
};

class ConstantDivider {
 public:
  ConstantDivider() : ConstantDivider(1) {}
  explicit ConstantDivider(i64 d) : d_(d), whole_(Reciprocal64::of(static_cast<u64>(d))) {
    while ((static_cast<u64>(d) >> twos_ & 1) == 0) ++twos_;
    odd_ = static_cast<u64>(d) >> twos_;
    odd_recip_ = Reciprocal64::of(odd_);
    while ((static_cast<u64>(d) << norm_shift_) >> 63 == 0) ++norm_shift_;
    d_norm_ = static_cast<u64>(d) << norm_shift_;
    recip_ = static_cast<u64>(~u128{0} / d_norm_ - (u128{1} << 64));  // d_norm_ >= 2^63: fits
  }
  i64 divisor() const { return d_; }

  // n / d for any unsigned 64-bit n.
  u64 div_u64(u64 n) const { return whole_.div(n); }
  // floor(a / d) and ceil(a / d) for any a. Past 2^63 (a requirement sum, value units x
  // kRateScale, often is) the quotient usually still fits int64: round_i64 and ceil_i64 give
  // it without the ~100-cycle 128-bit library division, which is left for a quotient that
  // does not fit.
  i128 floor(i128 a) const {
    if (a >= 0 && a < (i128{1} << 63)) return static_cast<i128>(div_u64(static_cast<u64>(a)));
    if (a < 0 && a > -(i128{1} << 63)) {
      // floor(a/d) = -ceil(-a/d)
      u64 n = static_cast<u64>(-a);
      return -static_cast<i128>(div_u64(n + static_cast<u64>(d_) - 1));
    }
    i64 q = 0;
    if (round_i64(a, false, q)) return q;
    return floor_div(a, d_);
  }
  i128 ceil(i128 a) const {
    if (a >= 0 && a < (i128{1} << 63))
      return static_cast<i128>(div_u64(static_cast<u64>(a) + static_cast<u64>(d_) - 1));
    if (a < 0 && a > -(i128{1} << 63)) return -static_cast<i128>(div_u64(static_cast<u64>(-a)));
    i64 q = 0;
    if (ceil_i64(a, q)) return q;
    return ceil_div(a, d_);
  }

  // floor(v / d) for any int64 v, without a branch on the sign (a sum of signed position
  // values is as often negative as positive: a branch would be mispredicted).
  i64 floor_i64(i64 v) const {
    const u64 neg = static_cast<u64>(v >> 63);          // all ones when v < 0
    const u64 mag = (static_cast<u64>(v) ^ neg) - neg;  // |v|, also for INT64_MIN
    // v < 0: floor(v / d) = -ceil(|v| / d) = -floor((|v| + d - 1) / d); |v| + d - 1 < 2^64
    const u64 q = div_u64(mag + (neg & static_cast<u64>(d_ - 1)));
    return static_cast<i64>((q ^ neg) - neg);
  }
  // floor(a / d) (up = false) or ceil(a / d) (up = true) into `out` when it fits int64, for
  // any 128-bit a: false when it does not fit. A multiply by a reciprocal (Moller & Granlund
  // 2011, "Improved division by invariant integers", alg. 4) instead of the ~100-cycle
  // 128-bit library division that floor() and ceil() take past 2^63, where most accounts'
  // requirement sums (value units x kRateScale) are; written on 64-bit halves without
  // branches on the data so that it compiles to straight-line code.
  bool round_i64(i128 a, bool up, i64& out) const {
    const u64 lo = static_cast<u64>(a), hi = static_cast<u64>(static_cast<u128>(a) >> 64);
    const u64 neg = static_cast<u64>(static_cast<i64>(hi) >> 63);  // all ones when a < 0
    // |a| = n_hi * 2^64 + n_lo (two's complement negation when negative)
    const u64 n_lo = (lo ^ neg) - neg;
    const u64 n_hi = (hi ^ neg) + (neg & static_cast<u64>(lo == 0));
    if (n_hi >= static_cast<u64>(d_)) return false;  // the quotient needs more than 64 bits
    u64 rem = 0;
    const u64 q = div_u128(n_hi, n_lo, rem);
    if (q > (u64{1} << 63)) return false;
    // round the magnitude away from zero when the direction asks for it (floor of a
    // negative, ceil of a positive) and there is a remainder
    const u64 mag = q + static_cast<u64>((rem != 0) & ((neg != 0) != up));
    if (mag > (u64{1} << 63) - (neg != 0 ? 0 : 1)) return false;
    out = static_cast<i64>((mag ^ neg) - neg);
    return true;
  }
  // round_i64(a, true, out), cheaper for a margin requirement sum. Such a sum is
  // non-negative and the divisor is S * kRateScale, a power of ten 10^k = 2^k * 5^k, so
  // ceil(a / d) = ceil(ceil(a / 2^k) / 5^k): a shift, then one multiply by the 64-bit
  // reciprocal of the odd factor whenever a / 2^k fits 64 bits (any requirement below
  // 2^64 / 5^k money units), against round_i64's 128-bit normalised division.
  bool ceil_i64(i128 a, i64& out) const {
    if (a < 0) return round_i64(a, true, out);
    // ceil(a / 2^twos) on 64-bit halves (twos < 63: no shift by 64, no branch on its size)
    const u128 biased = static_cast<u128>(a) + ((u64{1} << twos_) - 1);
    const u64 lo = static_cast<u64>(biased), hi = static_cast<u64>(biased >> 64);
    if (hi >> twos_ != 0) return round_i64(a, true, out);
    const u64 n = (lo >> twos_) | ((hi << 1) << (63 - twos_));
    const u64 q = odd_recip_.div(n);
    const u64 up = q + static_cast<u64>(n - q * odd_ != 0);
    if (up > static_cast<u64>(std::numeric_limits<i64>::max())) return false;
    out = static_cast<i64>(up);
    return true;
  }

 private:
  // n / d and n % d for n = hi * 2^64 + lo with hi < d (the quotient fits 64 bits).
  u64 div_u128(u64 hi, u64 lo, u64& rem) const {
    const int s = norm_shift_;  // shift both so that the divisor's top bit is set
    const u64 u1 = (hi << s) | ((lo >> 1) >> (63 - s));
    const u64 u0 = lo << s;
    const u128 p = static_cast<u128>(recip_) * u1 + ((static_cast<u128>(u1) << 64) | u0);
    u64 q = static_cast<u64>(p >> 64) + 1;
    u64 r = u0 - q * d_norm_;
    // the first correction happens about half of the time: masks, not a branch
    const u64 over = u64{0} - static_cast<u64>(r > static_cast<u64>(p));
    q += over;
    r += over & d_norm_;
    if (r >= d_norm_) [[unlikely]] {
      ++q;
      r -= d_norm_;
    }
    rem = r >> s;
    return q;
  }

  i64 d_;
  Reciprocal64 whole_;  // of d
  int twos_ = 0;        // d = odd_ * 2^twos_
  u64 odd_ = 1;
  Reciprocal64 odd_recip_;  // of odd_
  int norm_shift_ = 0;      // leading zeros of d
  u64 d_norm_ = 0;          // d << norm_shift_
  u64 recip_ = 0;           // floor((2^128 - 1) / d_norm_) - 2^64
};

// Decimal text of a 128-bit integer (for messages: std::to_string has no i128 overload).
std::string to_string_i128(i128 v);

}  // namespace deleverage
