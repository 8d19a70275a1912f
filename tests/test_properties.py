"""Property tests: random sequences of deposits, withdrawals (some refused), trades and
trade batches (some failing), loads, mark moves and incremental checks, applied to the
engine and to the reference model. After every step the engine's invariants hold and
the engine equals the reference; a refused call leaves every observable of the engine
exactly as it was."""

import numpy as np
import pytest
from engine_adapter import EngineExchange
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from long_mode import deadline, examples
from reference_model import DeleverageError, ReferenceExchange
from scenario import (
    HypothesisDraw,
    assert_engine_equals_reference,
    assert_same_margin,
    assert_same_margin_ratio,
    draw_mark,
    draw_market,
    draw_money_decimals,
    draw_near_limit_market,
    draw_price,
    draw_size,
    setup_markets,
    typical_notional_money,
)

ACCOUNT_POOL = [0, 1, 2, 3, 11, 12345, 2**62]


class ExchangeMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.ref = None
        self.eng = None

    # ------------------------------------------------------------------ helpers

    def apply(self, name, *args):
        """Apply one call to both; they must both succeed or both refuse, and a refused
        call must change nothing observable in the engine."""
        before = self.snapshot()
        ref_error = None
        try:
            getattr(self.ref, name)(*args)
        except DeleverageError as e:
            ref_error = e
        try:
            getattr(self.eng, name)(*args)
        except self.eng.errors.DeleverageError as e:
            assert ref_error is not None, f"engine refused {name}{args} that the reference accepts: {e!r}"
            expected_class = getattr(self.eng.errors, type(ref_error).__name__)
            if isinstance(ref_error, (self.ref.errors.InsufficientMargin, self.ref.errors.ArithmeticOverflow)):
                assert isinstance(e, expected_class), f"{name}{args}: {e!r} instead of {expected_class}"
            assert self.snapshot() == before, f"refused {name}{args} changed the engine state"
            return False
        assert ref_error is None, f"engine accepted {name}{args} that the reference refuses: {ref_error!r}"
        return True

    def snapshot(self):
        """Every observable of the engine. It runs a full margin check on the engine,
        which marks every market as valued for the incremental check: the reference does
        the same so that both agree on which marks moved since they were last valued."""
        self.ref.check_margin()
        return self.eng.raw_state()

    def accounts(self):
        return self.ref.account_ids()

    def draw_account(self, d):
        return d.choice(self.accounts())

    # -------------------------------------------------------------------- setup

    @initialize(data=st.data())
    def setup(self, data):
        d = HypothesisDraw(data)
        # a fifth of the runs near the limits: money_decimals 0 or 12, trades worth 2^55..2^58
        near = self.near = d.int(0, 4) == 0
        self.md = d.choice([0, 12]) if near else draw_money_decimals(d)
        draw = draw_near_limit_market if near else draw_market
        self.specs = [draw(d, i, self.md) for i in range(d.int(1, 3))]
        self.ref = ReferenceExchange(money_decimals=self.md)
        self.eng = EngineExchange(money_decimals=self.md)
        self.mids = setup_markets([self.ref, self.eng], self.specs)
        self.typical = max(typical_notional_money(s, self.md) for s in self.specs)
        for ex in (self.ref, self.eng):
            ex.set_marks(self.mids, [s.base_price * s.tick_units for s in self.specs])
        # two accounts so that trades are possible from the first step
        for a in ACCOUNT_POOL[:2]:
            assert self.apply("deposit", a, self.typical)

    # -------------------------------------------------------------------- rules

    @rule(data=st.data())
    def deposit(self, data):
        d = HypothesisDraw(data)
        account = d.choice(ACCOUNT_POOL)
        amount = self.typical * d.int(0, 20) // 10 + d.int(0, 5)
        # near the limits a deposit can take a balance out of range: both refuse
        assert self.apply("deposit", account, amount) or self.near, f"deposit({account}, {amount}) refused by both"

    @rule(data=st.data())
    def load_balances(self, data):
        # an imported book: signed balances, sometimes a repeated id (refused by both)
        d = HypothesisDraw(data)
        n = d.int(1, 3)
        accounts = [d.choice(ACCOUNT_POOL) for _ in range(n)]
        balances = [self.typical * d.int(-10, 20) // 10 + d.int(-5, 5) for _ in range(n)]
        self.apply("load_balances", accounts, balances)

    @rule(data=st.data())
    def withdraw(self, data):
        d = HypothesisDraw(data)
        account = d.choice(ACCOUNT_POOL + [987654])  # sometimes unknown
        if account in self.ref.accounts:
            equity, _, initial, _, _ = self.ref.margin(account)
            free = equity - initial if self.ref.accounts[account].positions else equity
            # around the limit: exactly at it, just past it, or anywhere from 0 to 2x
            amount = d.choice([free, free + 1, free - 1, d.int(0, max(1, 2 * abs(free)))])
            amount = min(max(0, amount), 2**63 - 1)
        else:
            amount = d.int(0, 10)
        self.apply("withdraw", account, amount)

    @rule(data=st.data())
    def withdraw_batch(self, data):
        d = HypothesisDraw(data)
        n = d.int(1, 3)
        accounts = [self.draw_account(d) for _ in range(n)]
        amounts = [max(0, self.ref.margin(a)[0] * d.int(0, 8) // 10) for a in accounts]
        self.apply("withdrawals_batch", accounts, amounts)

    def draw_trade(self, d, allow_invalid):
        mi = d.int(0, len(self.mids) - 1)
        spec = self.specs[mi]
        if len(self.accounts()) < 2 or (allow_invalid and d.int(0, 5) == 0):
            buyer = seller = self.draw_account(d)  # refused: buyer == seller
        else:
            buyer, seller = d.sample(self.accounts(), 2)
            if d.bool():
                buyer, seller = seller, buyer
        size = draw_size(d, spec)
        pos = self.ref.accounts[seller].positions.get(self.mids[mi])
        if pos is not None and d.int(0, 3) == 0:
            size = abs(pos.size)  # exactly closes or doubles the seller's position
        price = draw_price(d, spec)
        if allow_invalid and spec.tick_units > 1 and d.int(0, 9) == 0:
            price += d.int(1, spec.tick_units - 1)  # off the order tick: both refuse
        return (buyer, seller, self.mids[mi], size, price)

    @rule(data=st.data())
    def trade(self, data):
        d = HypothesisDraw(data)
        self.apply("trade", *self.draw_trade(d, allow_invalid=True))

    @rule(data=st.data())
    def trade_batch(self, data):
        d = HypothesisDraw(data)
        rows = [self.draw_trade(d, allow_invalid=True) for _ in range(d.int(1, 4))]
        self.apply("trades", rows)

    @rule(data=st.data())
    def load(self, data):
        d = HypothesisDraw(data)
        accounts = self.accounts()
        rows = []
        for a in accounts:
            for mi, m in enumerate(self.mids):
                if m not in self.ref.accounts[a].positions and d.int(0, 3) == 0:
                    sign = 1 if d.bool() else -1
                    rows.append((a, m, sign * draw_size(d, self.specs[mi]), draw_price(d, self.specs[mi])))
        if not rows:
            return
        net = {}
        for _, m, q, _ in rows:
            net[m] = net.get(m, 0) + q
        # a counterparty that is not in the rows and is flat or on the receiving side in
        # every unbalanced market (plain addition is then unambiguous)
        candidates = [
            a
            for a in accounts
            if all(
                a != r[0] for r in rows
            )
            and all(
                self.ref.accounts[a].positions.get(m) is None
                or (self.ref.accounts[a].positions[m].size > 0) == (net[m] < 0)
                for m in net
                if net[m] != 0
            )
        ]
        counterparty = d.choice(candidates) if candidates and d.int(0, 4) > 0 else None
        self.apply("load_positions", rows, counterparty)

    @rule(data=st.data())
    def move_marks(self, data):
        d = HypothesisDraw(data)
        moved = d.sample(self.mids, d.int(1, len(self.mids)))
        prices = [draw_mark(d, self.specs[m], spread_pct=d.choice([5, 40, 80])) for m in moved]
        # near the limits a mark can take a value out of the representable range: both refuse
        if not self.apply("set_marks", moved, prices):
            assert self.near, f"set_marks({moved}, {prices}) refused by both"
            return
        # the invariant below runs a full check after every step, so the incremental
        # check against moved-but-unvalued markets happens here, sometimes after a trade
        if d.bool():
            if d.bool():
                # a trade applied without a snapshot (which would value every market); near
                # the limits both may refuse it (the position range), never only one
                trade = self.draw_trade(d, allow_invalid=False)
                refused = []
                for ex in (self.ref, self.eng):
                    try:
                        ex.trade(*trade)
                        refused.append(None)
                    except (DeleverageError, self.eng.errors.DeleverageError) as e:
                        refused.append(type(e).__name__)
                assert refused[0] == refused[1], f"trade{trade}: reference {refused[0]}, engine {refused[1]}"
            self.incremental_check_with(d)

    def incremental_check_with(self, d):
        asked = d.sample(self.mids, d.int(1, len(self.mids)))
        exposed = self.ref.accounts_in_markets(set(asked) | self.ref.moved_markets())
        ref_rows = self.ref.check_margin(asked)
        assert [r.account for r in ref_rows] == exposed
        assert_same_margin(ref_rows, self.eng.check_margin(asked), f"check_margin({asked})")

    @rule(data=st.data())
    def incremental_check(self, data):
        self.incremental_check_with(HypothesisDraw(data))

    # --------------------------------------------------------------- invariants

    @invariant()
    def engine_equals_reference(self):
        if self.ref is None:
            return
        assert_engine_equals_reference(self.ref, self.eng)

    @precondition(lambda self: self.ref is not None)
    @invariant()
    def margin_ratio_matches(self):
        assert_same_margin_ratio(self.ref, self.eng)


ExchangeMachine.TestCase.settings = settings(
    max_examples=examples(60),
    stateful_step_count=25,
    deadline=deadline(),
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TestExchangeMachine = ExchangeMachine.TestCase


# -------------------------------------------------------- focused properties


@pytest.mark.parametrize("seed", range(10))
def test_refused_withdrawal_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    ref, eng = ReferenceExchange(6), EngineExchange(6)
    for ex in (ref, eng):
        m = ex.add_market("BTC", 3, 1, 5_000_000, 10_000_000)
        ex.deposit(1, 30_000_000)
        ex.deposit(2, 1_000_000_000)
        ex.trade(1, 2, m, 2000, 1000)
    mark = int(rng.integers(500, 1500))
    for ex in (ref, eng):
        ex.set_mark(m, mark)
    equity, _, initial, _, _ = ref.margin(1)
    free = equity - initial
    before = eng.raw_state()
    # withdrawing one unit more than the free margin (or anything, when there is none)
    with pytest.raises(eng.errors.InsufficientMargin):
        eng.withdraw(1, max(free + 1, 1))
    assert eng.raw_state() == before
    if free >= 0:
        eng.withdraw(1, free)
        ref.withdraw(1, free)
        assert eng.margin(1) == ref.margin(1)
        assert ref.margin(1)[0] == ref.margin(1)[2]  # equity == initial exactly
    eng.check_invariants()
