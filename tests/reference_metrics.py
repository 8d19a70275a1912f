"""A slow, plain-Python reading of the metric definitions (deleverage.metrics docstring), row by
row with dicts, to test the numpy implementation against. Exact integers throughout."""

from __future__ import annotations

from fractions import Fraction

R = 100_000_000
FILLS = ("liquidation_fill", "partial_fill", "backstop_fill")


def _units(ex):
    md = ex.money_decimals
    qd, pd = list(ex.scales.qty_decimals), list(ex.scales.mark_decimals)
    d = max([md] + [q + p for q, p in zip(qd, pd)])
    return md, 10 ** (d - md), [d - q - p for q, p in zip(qd, pd)]


def executor_price(mark, size, slip, impact_rate, depth, k, S):
    rate = slip
    if depth:
        rate += impact_rate * ((abs(size) * mark * 10**k) // S) // depth
    rate = min(rate, R)
    if size > 0:
        return max(1, mark * (R - rate) // R)
    return -((-mark * (R + rate)) // R)


def gini_exact(values):
    """sum_ij |x_i - x_j| / (2 n sum x) by the double sum, as a Fraction (None if undefined)."""
    n, total = len(values), sum(values)
    if n == 0 or total == 0:
        return None
    return Fraction(sum(abs(a - b) for a in values for b in values), 2 * n * total)


def kendall_brute(x, y):
    """(concordant - discordant, pairs) by looking at every pair."""
    cd = pairs = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            s = (x[i] - x[j]) * (y[i] - y[j])
            cd += (s > 0) - (s < 0)
            pairs += 1
    return cd, pairs


def reference_metrics(before, after, result, executor, ranking="bitmex", use_column=False):
    """The step's metrics as plain Python values (exact ints; ratios as Fractions). The
    executor's price of each bankrupt position is recomputed from the executor spec, or read
    from the event table's exec_price column with ``use_column``."""
    md, S, k = _units(before)
    marks = [int(v) for v in before.marks(exact=True)]
    slip = int(round(executor.slippage_bps * 10_000))
    impact_rate = depth = 0
    if executor.impact is not None:
        impact_rate = int(round(executor.impact.bps_per_depth * 10_000))
        depth = int(round(executor.impact.depth * 10**md))
    exec_account = executor.counterparty

    def value(m, q, p):
        return (q * p * 10 ** k[m]) // S

    pos = before.positions(exact=True)
    rows = list(zip(pos.account.tolist(), pos.market.tolist(), pos.size.tolist(), pos.unrealized_pnl.tolist()))
    size0 = {(a, m): q for a, m, q, _ in rows}
    upnl0 = {(a, m): v for a, m, _, v in rows}
    ev = result.events
    running = dict(size0)
    exec_px = {}
    events = {}  # (account, market) -> [taken, needed], in order of first row
    adl_lots, adl_value, hc = {}, {}, {}
    liquidated = set()
    credit_market, fill_market = {}, {}
    bad_debt = 0

    def add(key, t, n):
        e = events.setdefault(key, [0, 0])
        e[0] += t
        e[1] += n

    for i in range(len(ev)):
        kind = ev.kind[i]
        a, m, cp, dq, amt = (int(ev.account[i]), int(ev.market[i]), int(ev.counterparty[i]), int(ev.size[i]),
                             int(ev.amount[i]))
        if kind in FILLS:
            liquidated.add(a)
            fill_market[a] = m
            if kind == "partial_fill":  # a full close is priced at the size it started from
                running[(a, m)] = running.get((a, m), 0) + dq
        elif kind == "adl_close":
            key = (cp, m)
            liquidated.add(cp)
            if key not in exec_px:
                if use_column:
                    exec_px[key] = int(ev.exec_price[i])
                else:
                    exec_px[key] = executor_price(marks[m], running[key], slip, impact_rate, depth, k[m], S)
            elif use_column:
                assert int(ev.exec_price[i]) == exec_px[key]  # one executor price per bankrupt position
            gave = -value(m, dq, marks[m]) - amt
            add(key, gave, value(m, -dq, exec_px[key]) - amt)
            adl_lots[(a, m)] = adl_lots.get((a, m), 0) + abs(dq)
            adl_value[(a, m)] = adl_value.get((a, m), 0) + gave
            running[(a, m)] = running.get((a, m), 0) + dq
        elif kind == "haircut":
            hc[(a, m)] = hc.get((a, m), 0) - amt
        elif kind in ("socialized_credit", "bad_debt"):
            if m >= 0:
                credit_market[a] = m
                target = m
            else:
                target = credit_market.get(a, fill_market.get(a, -1))
            if kind == "socialized_credit":
                add((a, target), amt, amt)
            else:
                add((a, target), 0, amt)
                bad_debt += amt

    winners = {}
    for key, lots in adl_lots.items():
        winners[(key[0], key[1], "adl")] = (lots, abs(size0[key]), adl_value[key])
    for key, money in hc.items():
        winners[(key[0], key[1], "haircut")] = (money, max(0, upnl0.get(key, 0)), money)
    per_account = {}
    for (a, _, _), (_, _, v) in winners.items():
        per_account[a] = per_account.get(a, 0) + v
    excluded = liquidated | {exec_account}
    sides = {(m, -1 if size0[(b, m)] > 0 else 1) for (b, m) in exec_px}
    hc_markets = {m for (_, m) in hc}
    eligible = set(per_account)
    for a, m, q, up in rows:
        if a not in excluded and ((m, 1 if q > 0 else -1) in sides or (m in hc_markets and up > 0)):
            eligible.add(a)
    profit = {}
    for a, _, _, up in rows:
        if a != exec_account:
            profit[a] = profit.get(a, 0) + up
    top, top_before = -1, 0
    if profit:
        best = max(profit.items(), key=lambda kv: (kv[1], -kv[0]))
        if best[1] > 0:
            top, top_before = best
    top_after = top_before
    if top >= 0:
        top_after += after.account_margin(top, exact=True)["equity"] - before.account_margin(top, exact=True)["equity"]

    cd = pairs = 0
    for m in range(len(before.markets)):
        rb, ra = before.adl_ranking(m, ranking=ranking, exact=True), after.adl_ranking(m, ranking=ranking, exact=True)
        for side in (1, -1):
            after_rank = {a: r for a, s, r in zip(ra.account.tolist(), ra.side.tolist(), ra.rank.tolist()) if s == side}
            common = [(r, after_rank[a]) for a, s, r in zip(rb.account.tolist(), rb.side.tolist(), rb.rank.tolist())
                      if s == side and a in after_rank]
            c, p = kendall_brute([x for x, _ in common], [y for _, y in common])
            cd += c
            pairs += p

    taken = sum(t for t, _ in events.values())
    needed = sum(n for _, n in events.values())
    touched = [max(v, 0) for v in per_account.values()]
    fractions = [Fraction(t, c) if c else None for (t, c, _) in winners.values()]
    return {
        "events": events,
        "winners": winners,
        "taken_units": taken,
        "needed_units": needed,
        "overshoot_net_units": taken - needed,
        "overshoot_gross_units": sum(max(t - n, 0) for t, n in events.values()),
        "bad_debt_units": bad_debt,
        "accounts_touched": len(per_account),
        "eligible_accounts": len(eligible),
        "gini_touched": gini_exact(touched),
        "gini_eligible": gini_exact(touched + [0] * (len(eligible) - len(per_account))),
        "largest_fraction": max(fractions, key=lambda f: (f is None, f or 0)) if fractions else Fraction(0),
        "top_winner": top,
        "top_winner_profit_before_units": top_before,
        "top_winner_profit_after_units": top_after,
        "rank": (cd, pairs),
    }
