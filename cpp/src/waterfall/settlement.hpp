// One account's liquidation (docs/waterfall.md sections 3 to 5): bankruptcy values, the
// partial close, surplus offsets and the fund plan, executor fills, the hand-over to the last
// resort, fees, fund payments and settlement (private to the core; see step_state.hpp for
// where the other parts live).
#pragma once
#include <cstdint>
#include <vector>

#include "adl_closes.hpp"
#include "haircuts.hpp"
#include "step_state.hpp"

namespace deleverage {

class Settlement {
 public:
  Settlement(StepState& s, AdlCloses& adl, Haircuts& haircuts)
      : s_(s), e_(s.e), cfg_(s.cfg), adl_(adl), haircuts_(haircuts) {}

  // Before the step's first liquidation: the fund's pools as deficit matching starts them.
  void start();
  // Liquidates account a: closes its positions (partly, if a partial close restores its
  // maintenance), hands the deficit the fund does not pay to the last resort, and settles it
  // (or, if its lots wait for the round's shared ADL, defers its settlement).
  void liquidate(std::uint32_t a);
  // Settles the accounts whose settlement waited for the round's shared ADL.
  void settle_deferred();
  // A winner that ADL closes left flat and in debt: settled against the markets it was
  // deleveraged in.
  void settle_flat(std::uint32_t a);

 private:
  struct Closing {  // one position of the account being liquidated
    MarketId m;
    i64 q, mark_value, bk_value, exec_price, exec_value, deficit;
    i64 entry = 0;  // entry notional (money): the loss at the mark is entry - mark_value for either side
  };
  // What the last resort takes of each position: the fund's plan and the ADL lots.
  struct Plan {
    std::vector<i64> adl_lots, fund_planned, last_resort;
  };
  bool fixed_theta() const { return cfg_.theta != kThetaDeficit; }
  std::vector<Closing> closings(std::uint32_t a, bool with_executor);
  bool try_partial(std::uint32_t a, std::vector<Closing>& cl);
  void backstop(std::uint32_t a);
  Plan plan(const std::vector<Closing>& cl);
  void charge_fee(std::uint32_t a, const std::vector<Closing>& cl, i64 surplus);
  // `reserved`: part of the debt kept for the haircuts even if the fund could pay it (a fixed
  // theta in haircut mode).
  void settle(std::uint32_t a, const std::vector<Closing>& cl, const std::vector<i64>& fund_planned, i64 reserved = 0);

  StepState& s_;
  Engine& e_;
  const WaterfallConfig& cfg_;
  AdlCloses& adl_;
  Haircuts& haircuts_;
  struct DeferredSettlement {  // an account whose settlement waits for the round's ADL
    std::uint32_t account;
    std::vector<Closing> closings;
    std::vector<i64> fund_planned;
    i64 reserved;
  };
  std::vector<DeferredSettlement> deferred_;
  std::vector<i64> matching_pool_;  // per pool, fixed theta: what deficit matching would have left
};

}  // namespace deleverage
