// One account's liquidation and settlement: bankruptcy values, the partial close, surplus
// offsets and the fund plan, executor and backstop fills, the hand-over to ADL, fees, fund
// payments, and what is left for the round's haircuts.
#include "settlement.hpp"

namespace deleverage {

i64 Engine::executor_price(const MarketState& mk, i64 size, const ExecutorSpec& ex) const {
  i128 rate = ex.slippage_rate;
  if (ex.impact_depth > 0) {
    const i128 notional = markets_.div_s().floor(markets_.value_v(mk, abs64(size), mk.mark));
    rate += static_cast<i128>(ex.impact_rate) * notional / ex.impact_depth;
  }
  rate = std::min<i128>(rate, kRateScale);
  // against the trader being closed: a long sells lower (floor), a short buys higher (ceil)
  if (size > 0)
    return std::max<i64>(1, static_cast<i64>(floor_div(static_cast<i128>(mk.mark) * (kRateScale - rate), kRateScale)));
  return to_i64_checked(ceil_div(static_cast<i128>(mk.mark) * (kRateScale + rate), kRateScale), "executor price");
}

void Settlement::start() {
  s_.promised.assign(static_cast<std::size_t>(e_.fund().pool_count()), 0);
  matching_pool_.resize(s_.promised.size());
  for (std::size_t p = 0; p < matching_pool_.size(); ++p) matching_pool_[p] = e_.fund().available(static_cast<int>(p));
}

std::vector<Settlement::Closing> Settlement::closings(std::uint32_t a, bool with_executor) {
  // Bankruptcy values: the account's equity e' = cash + sum(mark values) is split by the
  // configured rule (split_equity, docs/semantics.md), so that cash + sum(bk values) == 0
  // exactly.
  std::vector<Closing> cl;
  const std::vector<Engine::EquityShare> shares = e_.equity_shares(a, cfg_.deficit_split);
  for (const Engine::EquityShare& x : shares) cl.push_back(Closing{x.m, x.size, x.mark_value, 0, 0, 0, 0, x.entry});
  for (std::size_t i = 0; i < cl.size(); ++i) {
    const i128 share = shares[i].share;
    cl[i].bk_value = to_i64_checked(cl[i].mark_value - share, "bankruptcy value");
    if (with_executor) {
      const MarketState& mk = e_.market_table()[static_cast<std::size_t>(cl[i].m)];
      cl[i].exec_price = e_.executor_price(
          mk, cl[i].q, cfg_.executor.kind == ExecutorKind::MarketClose ? cfg_.executor : ExecutorSpec{});
      cl[i].exec_value = e_.market_table().value_money(mk, cl[i].q, cl[i].exec_price);
      cl[i].deficit = to_i64_checked(static_cast<i128>(cl[i].bk_value) - cl[i].exec_value, "deficit");
    }
  }
  return cl;
}

// Partial liquidation: close the same fraction f of every position through the executor,
// with f the smallest that restores maintenance if fills cost `slippage`:
// equity - f*cost >= (1 - f)*MM  =>  f >= (MM - equity) / (MM - cost).
bool Settlement::try_partial(std::uint32_t a, std::vector<Closing>& cl) {
  const AccountMargin am = s_.margin(a);
  if (am.equity < 0 || !am.liquidatable) return false;
  cl = closings(a, true);
  // Closing a fraction f of every position costs f x (cost + fees): the value lost against
  // the mark and the liquidation fee of closing everything (money x R units, plus one unit
  // per position for the fee's rounding up), so the fee cannot undo what the close restores.
  i128 den = 0;
  for (const Closing& c : cl) {
    den -= (static_cast<i128>(c.mark_value) - c.exec_value) * kRateScale;
    const i64 fee_rate = e_.market_table()[static_cast<std::size_t>(c.m)].spec.liquidation_fee_rate;
    if (fee_rate > 0) den -= static_cast<i128>(abs64(c.exec_value)) * fee_rate + kRateScale;
  }
  den += static_cast<i128>(am.maintenance) * kRateScale;
  if (den <= 0) return false;
  const i128 num = (static_cast<i128>(am.maintenance) - am.equity) * kRateScale;
  if (num <= 0 || num >= den) return false;  // nothing to restore, or closing everything would not be enough
  for (const Closing& c : cl) {
    // |q| * num can pass 128 bits on a near-limit book (|q| ~ 2^50, num ~ 2^80); 0 < num < den
    const i64 lots = static_cast<i64>(std::min<std::uint64_t>(
        static_cast<std::uint64_t>(abs64(c.q)),
        mul_div_ceil_below(static_cast<std::uint64_t>(abs64(c.q)), static_cast<u128>(num), static_cast<u128>(den))));
    if (lots == 0) continue;
    const MarketState& mk = e_.market_table()[static_cast<std::size_t>(c.m)];
    const i64 dq = c.q > 0 ? -lots : lots;
    const i64 cash = -e_.market_table().value_money(mk, dq, c.exec_price);
    s_.fill(a, c.m, dq, cash);
    s_.fill(s_.exec_account, c.m, -dq, -cash);
    s_.result.events.add(e_.step(), EventKind::PartialFill, e_.book().ids()[a], c.m, e_.book().ids()[s_.exec_account],
                         dq, cash, c.exec_price, -1, c.exec_price);
    const i64 fee_cap =
        static_cast<i64>(ceil_div(static_cast<i128>(abs64(cash)) * mk.spec.liquidation_fee_rate, kRateScale));
    const i64 fee = std::min<i64>(fee_cap, std::max<i64>(0, s_.equity(a)));
    if (fee > 0) {
      e_.add_to_balance(a, -fee);
      e_.note_changed(a);
      e_.fund().move(e_.step(), mk.pool, c.m, e_.book().ids()[a], fee, LedgerReason::LiquidationFee);
      s_.result.events.add(e_.step(), EventKind::LiquidationFee, e_.book().ids()[a], c.m, 0, 0, -fee, 0, mk.pool);
      s_.result.totals.fund_fees += fee;
    }
  }
  ++s_.result.totals.partial_liquidations;
  return e_.book().hot()[a].count == 0 || !s_.margin(a).liquidatable;
}

void Settlement::liquidate(std::uint32_t a) {
  // its own fills re-score it once, when it is done (see Engine::hold_notes)
  struct Hold {
    Engine& e;
    ~Hold() { e.release_notes(1); }
  } hold{e_};
  e_.hold_notes(1, a);
  s_.touch(a);
  ++s_.result.totals.liquidated_accounts;
  const i64 id = e_.book().ids()[a];
  if (cfg_.executor.partial && cfg_.executor.kind == ExecutorKind::MarketClose) {
    std::vector<Closing> partial;
    const bool done = try_partial(a, partial);
    if (e_.book().hot()[a].count == 0) {  // rounding up closed everything: settle what is left
      settle(a, partial, {});
      return;
    }
    if (done) return;
  }
  if (e_.book().hot()[a].count == 0) return;

  if (cfg_.executor.kind == ExecutorKind::Backstop) {
    backstop(a);
    return;
  }

  std::vector<Closing> cl = closings(a, true);
  Plan p = plan(cl);
  std::vector<i64>& adl_lots = p.adl_lots;

  // Fills: the executor takes what is not deleveraged.
  for (std::size_t i = 0; i < cl.size(); ++i) {
    const Closing& c = cl[i];
    const MarketState& mk = e_.market_table()[static_cast<std::size_t>(c.m)];
    const i64 sign = c.q > 0 ? 1 : -1;
    if (adl_lots[i] > 0) {
      // the deleveraged part closes at its share of the bankruptcy value (or at a mark)
      const i64 bk_part = adl_lots[i] == abs64(c.q)
                              ? c.bk_value
                              : static_cast<i64>(static_cast<i128>(c.bk_value) * adl_lots[i] / abs64(c.q));
      i64 adl_value = bk_part;
      if (cfg_.adl_price != AdlPrice::Bankruptcy) {
        const i64 px = cfg_.adl_price == AdlPrice::Mark ? mk.mark : (mk.previous_mark > 0 ? mk.previous_mark : mk.mark);
        adl_value = e_.market_table().value_money(mk, sign * adl_lots[i], px);
      }
      if (adl_.batched())  // the lots stay open until the round's shared ADL
        adl_.demand(a, c.m, static_cast<int>(sign), adl_lots[i], adl_value, bk_part, c.exec_price);
      else
        adl_lots[i] = adl_.close(a, c.m, adl_lots[i], adl_value, bk_part, c.exec_price);
    }
    const i64 exec_lots = abs64(c.q) - adl_lots[i];
    if (exec_lots > 0) {
      const i64 cash = e_.market_table().value_money(mk, sign * exec_lots, c.exec_price);
      s_.fill(a, c.m, -sign * exec_lots, cash);
      s_.fill(s_.exec_account, c.m, sign * exec_lots, -cash);
      s_.result.events.add(e_.step(), EventKind::LiquidationFill, id, c.m, e_.book().ids()[s_.exec_account],
                           -sign * exec_lots, cash, c.exec_price, -1, c.exec_price);
    }
  }

  i64 reserved = 0;
  if (fixed_theta() && cfg_.mode == WaterfallMode::Haircut)
    for (i64 v : p.last_resort) reserved += v;
  if (adl_.waiting(a)) {  // settles after the round's ADL
    for (std::size_t i = 0; i < cl.size(); ++i)
      s_.promised[static_cast<std::size_t>(e_.market_table()[static_cast<std::size_t>(cl[i].m)].pool)] +=
          p.fund_planned[i];
    deferred_.push_back(DeferredSettlement{a, std::move(cl), std::move(p.fund_planned), reserved});
    return;
  }
  settle(a, cl, p.fund_planned, reserved);
}

// The backstop takes every position at its bankruptcy value: nothing is left to settle.
void Settlement::backstop(std::uint32_t a) {
  const i64 id = e_.book().ids()[a];
  for (const Closing& c : closings(a, false)) {
    s_.fill(a, c.m, -c.q, c.bk_value);
    s_.fill(s_.exec_account, c.m, c.q, -c.bk_value);
    const MarketState& mk = e_.market_table()[static_cast<std::size_t>(c.m)];
    const i64 px = clamp_i64(static_cast<i128>(abs64(c.bk_value)) * e_.market_table().scale() /
                             (static_cast<i128>(abs64(c.q)) * mk.pow10k));
    s_.result.events.add(e_.step(), EventKind::BackstopFill, id, c.m, e_.book().ids()[s_.exec_account], -c.q,
                         c.bk_value, px, -1, px);
  }
}

// Surplus positions offset deficits first, then each market's pool, then the last resort.
Settlement::Plan Settlement::plan(const std::vector<Closing>& cl) {
  i128 total_deficit = 0, surplus = 0;
  for (const Closing& c : cl) {
    total_deficit += c.deficit;
    if (c.deficit < 0) surplus -= c.deficit;
  }
  if (total_deficit > 0) s_.result.totals.deficit += total_deficit;

  Plan p{std::vector<i64>(cl.size(), 0), std::vector<i64>(cl.size(), 0), std::vector<i64>(cl.size(), 0)};
  std::vector<i64>&adl_lots = p.adl_lots, &fund_planned = p.fund_planned, &last_resort = p.last_resort;
  if (total_deficit > 0) {
    i128 offset = surplus;
    for (std::size_t i = 0; i < cl.size(); ++i) {
      if (cl[i].deficit <= 0) continue;
      const i64 use = static_cast<i64>(std::min<i128>(offset, cl[i].deficit));
      offset -= use;
      const i64 rest = cl[i].deficit - use;
      const int pool = e_.market_table()[static_cast<std::size_t>(cl[i].m)].pool;
      // what accounts waiting for the round's ADL were promised is not available any more
      i64 avail = e_.fund().available(pool) - s_.promised[static_cast<std::size_t>(pool)];
      for (std::size_t j = 0; j < i; ++j)  // earlier positions' plans on the same pool
        if (e_.market_table()[static_cast<std::size_t>(cl[j].m)].pool == pool) avail -= fund_planned[j];
      fund_planned[i] = std::max<i64>(0, std::min(rest, avail));
      if (fixed_theta()) {
        // last_resort_needed: what deficit matching would have left to the last resort, with a
        // counterfactual pool that pays every deficit of the step in turn
        i64& left = matching_pool_[static_cast<std::size_t>(pool)];
        const i64 matching = std::max<i64>(0, std::min(rest, left));
        left -= matching;
        s_.result.totals.last_resort_needed += rest - matching;
        // the last resort takes at least theta of the deficit
        const i64 share = static_cast<i64>(ceil_div(static_cast<i128>(rest) * cfg_.theta, kRateScale));
        fund_planned[i] = std::min(fund_planned[i], rest - share);
      } else {
        s_.result.totals.last_resort_needed += rest - fund_planned[i];
      }
      last_resort[i] = rest - fund_planned[i];
      s_.result.totals.last_resort_planned += last_resort[i];
      if (cfg_.mode == WaterfallMode::Close && last_resort[i] > 0)
        adl_lots[i] = static_cast<i64>(std::min<i128>(
            abs64(cl[i].q), ceil_div(static_cast<i128>(abs64(cl[i].q)) * last_resort[i], cl[i].deficit)));
    }
  }
  return p;
}

void Settlement::charge_fee(std::uint32_t a, const std::vector<Closing>& cl, i64 surplus) {
  // The fund receives the surplus up to each position's fee, position by position.
  for (const Closing& c : cl) {
    if (surplus <= 0) break;
    const MarketState& mk = e_.market_table()[static_cast<std::size_t>(c.m)];
    const i64 cap =
        static_cast<i64>(ceil_div(static_cast<i128>(abs64(c.exec_value)) * mk.spec.liquidation_fee_rate, kRateScale));
    const i64 fee = std::min(surplus, cap);
    if (fee <= 0) continue;
    e_.add_to_balance(a, -fee);
    e_.note_changed(a);
    e_.fund().move(e_.step(), mk.pool, c.m, e_.book().ids()[a], fee, LedgerReason::LiquidationFee);
    s_.result.events.add(e_.step(), EventKind::LiquidationFee, e_.book().ids()[a], c.m, 0, 0, -fee, 0, mk.pool);
    s_.result.totals.fund_fees += fee;
    surplus -= fee;
  }
}

// Settlement of a flat account: its balance is its surplus (the fund takes the fee) or its
// deficit (the fund pays what is planned, then whatever it can, then winners of the
// account's markets are haircut; what nobody can cover is bad debt).
void Settlement::settle(std::uint32_t a, const std::vector<Closing>& cl, const std::vector<i64>& fund_planned,
                        i64 reserved) {
  if (e_.book().hot()[a].balance > 0) {
    charge_fee(a, cl, e_.book().hot()[a].balance);
    return;
  }
  for (std::size_t i = 0; i < cl.size() && e_.book().hot()[a].balance < 0; ++i)
    if (i < fund_planned.size() && fund_planned[i] > 0)
      s_.pay_from_fund(a, cl[i].m, std::min(fund_planned[i], -e_.book().hot()[a].balance));
  // Rounding dust, an ADL at a mark, or haircut mode leave a remainder: the fund first,
  // then (at the end of the round) winners of the market that caused most of it.
  reserved = std::min(reserved, std::max<i64>(0, -e_.book().hot()[a].balance));
  for (std::size_t i = 0; i < cl.size() && e_.book().hot()[a].balance + reserved < 0; ++i)
    s_.pay_from_fund(a, cl[i].m, -e_.book().hot()[a].balance - reserved);
  if (e_.book().hot()[a].balance < 0) {
    std::size_t worst = 0;
    for (std::size_t i = 1; i < cl.size(); ++i)
      if (cl[i].deficit > cl[worst].deficit) worst = i;
    haircuts_.defer(a, cl.empty() ? MarketId{0} : cl[worst].m, -e_.book().hot()[a].balance);
  }
}

// A winner that ADL closes left flat and in debt: settle it against the markets it was
// deleveraged in.
void Settlement::settle_flat(std::uint32_t a) {
  s_.touch(a);
  std::vector<Closing> cl;
  auto it =
      std::lower_bound(s_.adl_log.begin(), s_.adl_log.end(), std::make_pair(a, std::numeric_limits<MarketId>::min()));
  for (; it != s_.adl_log.end() && it->first == a; ++it)
    if (cl.empty() || cl.back().m != it->second) cl.push_back(Closing{it->second, 0, 0, 0, 0, 0, 1});
  settle(a, cl, {});
}

void Settlement::settle_deferred() {
  for (DeferredSettlement& ds : deferred_) {
    for (std::size_t i = 0; i < ds.closings.size(); ++i)  // its promise becomes a payment
      s_.promised[static_cast<std::size_t>(e_.market_table()[static_cast<std::size_t>(ds.closings[i].m)].pool)] -=
          ds.fund_planned[i];
    settle(ds.account, ds.closings, ds.fund_planned, ds.reserved);
  }
  deferred_.clear();
}

}  // namespace deleverage
