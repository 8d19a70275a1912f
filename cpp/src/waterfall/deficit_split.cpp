// Where a liquidated account's equity lands among its positions (docs/semantics.md,
// "Bankruptcy values"): the one rule behind the waterfall's bankruptcy values and the
// bankruptcy prices of positions().
#include <algorithm>

#include "deleverage/engine.hpp"
#include "deleverage/errors.hpp"
#include "deleverage/waterfall.hpp"

namespace deleverage {

std::vector<i128> split_equity(i128 equity, DeficitSplit split, std::span<const i128> loss, std::span<const i128> mm,
                               std::span<const i128> mark_value) {
  const std::size_t n = mm.size();
  std::vector<i128> w(n), shares(n, 0);
  i128 w_sum = 0;
  // the loss rule: a negative equity goes where the losses are, so a crash in one market
  // does not deleverage the account's positions in markets that did not move
  if (split == DeficitSplit::Loss && equity < 0) {
    for (std::size_t i = 0; i < n; ++i) w_sum += (w[i] = loss[i]);
  }
  const bool by_loss = w_sum > 0;
  if (w_sum == 0) {  // maintenance share (also the fallback: no position at a loss)
    for (std::size_t i = 0; i < n; ++i) w_sum += (w[i] = mm[i]);
  }
  if (w_sum == 0) {  // no maintenance anywhere: by notional, plus one so that none is zero
    for (std::size_t i = 0; i < n; ++i) w_sum += (w[i] = (mark_value[i] < 0 ? -mark_value[i] : mark_value[i]) + 1);
  }
  // floor shares, the remainder to the last position (by loss: the last one at a loss, so a
  // position in profit or flat takes exactly nothing)
  std::size_t last = n > 0 ? n - 1 : 0;
  if (by_loss)
    for (std::size_t i = 0; i < n; ++i)
      if (w[i] > 0) last = i;
  i128 assigned = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (i == last) continue;
    i128 prod;
    if (__builtin_mul_overflow(equity, w[i], &prod))
      throw ArithmeticOverflow("bankruptcy value: equity share exceeds 128 bits");
    shares[i] = floor_div(prod, w_sum);
    assigned += shares[i];
  }
  if (n > 0) shares[last] = equity - assigned;
  return shares;
}

std::vector<Engine::EquityShare> Engine::equity_shares(std::uint32_t a, DeficitSplit split) const {
  // e' = cash + sum of mark values (money units, each floored), cash = balance - sum of entries
  std::vector<EquityShare> out;
  i128 e_prime = book_.hot()[a].balance;
  for (std::uint32_t p = book_.hot()[a].start; p < book_.hot()[a].start + book_.hot()[a].count; ++p) {
    const MarketState& mk = markets_[static_cast<std::size_t>(book_.markets()[p])];
    const i64 mark_value = markets_.value_money(mk, book_.sizes()[p], mk.mark);
    e_prime += static_cast<i128>(mark_value) - book_.entries()[p];
    out.push_back(EquityShare{book_.markets()[p], book_.sizes()[p], book_.entries()[p], mark_value, 0});
  }
  std::sort(out.begin(), out.end(), [](const EquityShare& x, const EquityShare& y) { return x.m < y.m; });
  std::vector<i128> loss(out.size()), mm(out.size()), mv(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    const MarketState& mk = markets_[static_cast<std::size_t>(out[i].m)];
    mm[i] = markets_.div_sr().ceil(contribution(mk, out[i].size, 0, mk.mark).mm);
    mv[i] = out[i].mark_value;
    loss[i] = std::max<i128>(0, static_cast<i128>(out[i].entry) - out[i].mark_value);  // -u_i
  }
  const std::vector<i128> shares = split_equity(e_prime, split, loss, mm, mv);
  for (std::size_t i = 0; i < out.size(); ++i) out[i].share = shares[i];
  return out;
}

}  // namespace deleverage
