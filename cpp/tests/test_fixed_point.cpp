#include <gtest/gtest.h>

#include <random>

#include "deleverage/fixed_point.hpp"

using namespace deleverage;

TEST(ConstantDivider, MatchesPlainDivisionOnRandomAndEdgeValues) {
  std::mt19937_64 rng(42);
  const i64 divisors[] = {1, 2, 3, 7, 10, 1000, 100000000, 1000000000000LL, 10000000000000000LL, 999999937};
  for (i64 d : divisors) {
    ConstantDivider div(d);
    std::vector<i128> values = {0,
                                1,
                                -1,
                                d - 1,
                                d,
                                d + 1,
                                -d,
                                -d - 1,
                                -d + 1,
                                (i128{1} << 63) - 1,
                                -((i128{1} << 63) - 1),
                                i128{1} << 63,
                                -(i128{1} << 63),
                                i128{1} << 100,
                                -(i128{1} << 100) - 5};
    for (int i = 0; i < 20000; ++i) values.push_back(static_cast<i128>(static_cast<i64>(rng())) >> (rng() % 63));
    for (i128 v : values) {
      ASSERT_EQ(div.floor(v), floor_div(v, d)) << "d=" << d << " v=" << to_string_i128(v);
      ASSERT_EQ(div.ceil(v), ceil_div(v, d)) << "d=" << d << " v=" << to_string_i128(v);
    }
  }
}

// round_i64, ceil_i64 and floor_i64 (the margin check's reciprocal paths): equal to plain division
// wherever the result fits int64, and round_i64 and ceil_i64 refuse exactly where it does not.
TEST(ConstantDivider, RoundI64MatchesPlainDivision) {
  std::mt19937_64 rng(7);
  const i64 divisors[] = {
      1, 2, 3, 10, 1000, 100000000, 100000000000LL, 999999937, (i64{1} << 62) + 1, std::numeric_limits<i64>::max()};
  const i128 lo64 = std::numeric_limits<i64>::min(), hi64 = std::numeric_limits<i64>::max();
  for (i64 d : divisors) {
    ConstantDivider div(d);
    const i128 edge = static_cast<i128>(static_cast<u128>(d) << 64);  // the first |a| whose quotient needs 65 bits
    const i128 top = static_cast<i128>(d) * hi64;
    const i128 halving_edge = i128{1} << (64 + __builtin_ctzll(static_cast<u64>(d)));
    std::vector<i128> values = {0, 1, -1, d - 1, d, -d, edge - 1, edge, edge + 1, -(edge - 1), -edge, -edge - 1, top,
                                top + 1, top + d, -top, -top - d, -top - d - 1, i128{1} << 64, -(i128{1} << 64),
                                std::numeric_limits<i128>::max(), std::numeric_limits<i128>::min(),
                                std::numeric_limits<i128>::min() + 1, lo64, hi64, hi64 + 1, (i128{1} << 64) - 1,
                                static_cast<i128>(d) * (hi64 + 1), static_cast<i128>(d) * (hi64 + 1) - 1,
                                // where ceil_i64's a / 2^k (d = odd * 2^k) stops fitting 64 bits
                                halving_edge - 1, halving_edge, halving_edge + 1,
                                halving_edge - (i128{1} << __builtin_ctzll(static_cast<u64>(d)))};
    for (int i = 0; i < 20000; ++i) {
      const u128 raw = (static_cast<u128>(rng()) << 64) | rng();
      const i128 v = static_cast<i128>(raw) >> (rng() % 127);
      values.push_back(v);
      values.push_back(v / d * d);  // exact multiples: no rounding
    }
    for (i128 v : values) {
      for (bool up : {false, true}) {
        const i128 want = up ? ceil_div(v, d) : floor_div(v, d);
        i64 got = 0;
        const bool fits = want >= lo64 && want <= hi64;
        ASSERT_EQ(div.round_i64(v, up, got), fits) << "d=" << d << " v=" << to_string_i128(v) << " up=" << up;
        if (fits) ASSERT_EQ(got, want) << "d=" << d << " v=" << to_string_i128(v) << " up=" << up;
        if (!up) continue;
        got = 0;  // ceil_i64: round_i64(v, true) with a one-multiply path below 2^64
        ASSERT_EQ(div.ceil_i64(v, got), fits) << "d=" << d << " v=" << to_string_i128(v);
        if (fits) ASSERT_EQ(got, want) << "d=" << d << " v=" << to_string_i128(v);
      }
      if (v >= lo64 && v <= hi64)
        ASSERT_EQ(div.floor_i64(static_cast<i64>(v)), floor_div(v, d)) << "d=" << d << " v=" << to_string_i128(v);
    }
  }
}

TEST(FloorCeil, RoundTowardMinusAndPlusInfinity) {
  EXPECT_EQ(floor_div(7, 2), 3);
  EXPECT_EQ(floor_div(-7, 2), -4);
  EXPECT_EQ(ceil_div(7, 2), 4);
  EXPECT_EQ(ceil_div(-7, 2), -3);
  EXPECT_EQ(floor_div_signed(7, -2), -4);
  EXPECT_EQ(ceil_div_signed(7, -2), -3);
  EXPECT_EQ(floor_div(-6, 2), -3);
}

TEST(ToI64Checked, ThrowsInsteadOfWrapping) {
  EXPECT_THROW(to_i64_checked(i128{1} << 63, "x"), ArithmeticOverflow);
  EXPECT_EQ(to_i64_checked(-(i128{1} << 63), "x"), std::numeric_limits<i64>::min());
}
