// A minimal risk service built on the installed core library: one market, two accounts,
// a fill, a mark move, the margin of one account (money in micro-dollars), then a crash
// that bankrupts it and one auto-deleveraging fill at its bankruptcy price.
#include <cstdio>
#include <vector>

#include "deleverage/deleverage.hpp"

int main() {
  using namespace deleverage;

  Engine engine(/*money_decimals=*/6, /*threads=*/1);

  MarketSpec btc;
  btc.symbol = "BTC-PERP";
  btc.qty_decimals = 3;              // a lot is 0.001 BTC
  btc.price_decimals = 1;            // a tick is $0.1
  btc.maintenance_rate = 5'000'000;  // 5% in units of 1e-8
  btc.initial_rate = 10'000'000;     // 10%
  const MarketId m = engine.add_market(btc);

  const std::vector<i64> accounts = {1, 2};
  const std::vector<i64> amounts = {30'000'000, 1'000'000'000};  // $30 and $1000
  engine.deposit(accounts, amounts);

  // account 1 buys 2 BTC (2000 lots) from account 2 at $100.0 (1000 ticks)
  engine.trade(/*buyer=*/1, /*seller=*/2, m, /*size=*/2'000, /*price=*/1'000);

  const std::vector<MarketId> markets = {m};
  const std::vector<i64> marks = {900};  // BTC falls to $90.0
  engine.set_marks(markets, marks);

  const AccountMargin a = engine.account_margin(1);
  std::printf("account 1: equity %.6f  maintenance %.6f  initial %.6f  liquidatable %s\n", a.equity / 1e6,
              a.maintenance / 1e6, a.initial / 1e6, a.liquidatable ? "yes" : "no");

  const MarginReport report = engine.check_margin();
  std::size_t liquidatable = 0;
  for (auto flag : report.liquidatable) liquidatable += flag;
  std::printf("%zu accounts checked, %zu liquidatable\n", report.account_id.size(), liquidatable);

  // BTC falls to $80.0: account 1's equity is 30 + (160 - 200) = -$10, bankrupt at $85.0.
  const std::vector<i64> crash = {800};
  engine.set_marks(markets, crash);
  const PositionReport pos = engine.positions();  // account 1's position is row 0
  const i64 bankruptcy_price = pos.bankruptcy_price[0];
  // Close half of it (1000 lots) against account 2's short at the bankruptcy price.
  engine.adl_fill(/*bankrupt=*/1, /*winner=*/2, m, /*lots=*/1'000, bankruptcy_price);
  const AccountMargin after = engine.account_margin(1);
  std::printf("ADL at %.1f: account 1 equity %.6f, account 2 balance %.6f\n", bankruptcy_price / 10.0,
              after.equity / 1e6, engine.balance(2) / 1e6);
  engine.check_invariants();
  return 0;
}
