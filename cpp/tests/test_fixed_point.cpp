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
