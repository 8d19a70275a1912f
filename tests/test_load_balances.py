"""Exchange.load_balances: importing signed balances (accounts in debt included), counted by
conservation, recorded by the journal and kept by snapshots."""

from __future__ import annotations

import os
import struct

import pytest

import deleverage
from deleverage import Exchange
from deleverage.errors import ArithmeticOverflow, CorruptSnapshot, InsufficientMargin, InvalidInput

DATA = os.path.join(os.path.dirname(__file__), "data")


def book() -> Exchange:
    ex = Exchange(6, threads=1)
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, maintenance_margin=0.05, initial_margin=0.1, mark_price=100.0)
    return ex


def test_sets_signed_balances_and_creates_accounts() -> None:
    ex = book()
    ex.deposit(1, 10.0)
    ex.load_balances([1, 2, 3], [250.0, -12.5, 0.0])
    assert ex.balance(1) == 250.0 and ex.balance(2) == -12.5 and ex.balance(3) == 0.0
    assert ex.account_count == 3
    # the change from the previous balance is the flow: (250 - 10) + (-12.5) + 0
    flows = ex.core.flows()
    assert flows["loaded_balances"] == 240_000000 - 12_500000
    assert flows["deposits"] == 10_000000
    ex.check_invariants()
    # loading again replaces, it does not add
    ex.load_balances([2], [-1], exact=True)
    assert ex.balance(2, exact=True) == -1
    assert ex.core.flows()["loaded_balances"] == 240_000000 - 1
    ex.check_invariants()


def test_an_account_in_debt_has_negative_equity() -> None:
    ex = book()
    ex.load_balances([1, 2], [1000.0, -50.0])
    m = ex.account_margin(2, exact=True)
    assert m["equity"] == -50_000000
    # a withdrawal from an account in debt is refused, state unchanged
    before = ex.state_hash()
    with pytest.raises(InsufficientMargin, match="account 2"):
        ex.withdraw(2, 1.0)
    assert ex.state_hash() == before


@pytest.mark.parametrize(
    "accounts, balances, error, match",
    [
        ([1, 2, 1], [1.0, 2.0, 3.0], InvalidInput, r"accounts\[2\]: account 1 appears twice \(also at index 0\)"),
        ([1, 2, 3], [1.0, 2.0], InvalidInput, "balances"),
        ([1], [2.0**70], ArithmeticOverflow, "balances"),
        ([1, 2], [1.0, float("nan")], InvalidInput, r"balances\[1\]"),
    ],
)
def test_bad_input_leaves_the_state_unchanged(accounts, balances, error, match) -> None:
    ex = book()
    ex.deposit(1, 5.0)
    before = ex.state_hash()
    with pytest.raises(error, match=match):
        ex.load_balances(accounts, balances)
    assert ex.state_hash() == before and ex.account_count == 1 and ex.balance(1) == 5.0


def test_journal_replays_loaded_balances(tmp_path) -> None:
    ex = book()
    ex.save(tmp_path / "s.dlv")
    ex.open_journal(tmp_path / "j.log")
    ex.deposit(7, 3.0)
    ex.load_balances([7, 8], [-4.25, 9.0])
    ex.close_journal()
    again = Exchange.replay(tmp_path / "s.dlv", tmp_path / "j.log")
    assert again.state_hash() == ex.state_hash()
    assert again.balance(7) == -4.25 and again.balance(8) == 9.0
    assert again.core.flows()["loaded_balances"] == ex.core.flows()["loaded_balances"]
    again.check_invariants()


def test_snapshot_keeps_loaded_balances() -> None:
    ex = book()
    ex.load_balances([1, 2], [100.0, -7.0])
    back = Exchange.from_bytes(ex.to_bytes())
    assert back.state_hash() == ex.state_hash()
    assert back.balance(2) == -7.0 and back.core.flows()["loaded_balances"] == 93_000000
    back.check_invariants()
    # a snapshot whose loaded_balances flow disagrees with the balances breaks conservation
    data = bytearray(ex.to_bytes())
    data[40 + 4 + 8 + 4 * 16] ^= 1  # the low byte of loaded_balances (after money_decimals, step, 4 flows)
    struct.pack_into("<Q", data, 24, deleverage._core.checksum64(bytes(data[40:]), 1))
    struct.pack_into("<Q", data, 32, deleverage._core.checksum64(bytes(data[:32]), 2))
    with pytest.raises(CorruptSnapshot, match="conservation"):
        Exchange.from_bytes(bytes(data))


def test_version_1_snapshot_still_loads() -> None:
    # written by the build before snapshot version 2 (tests/data/snapshot_v1.dlv): two markets,
    # positions, an own pool, a fund deposit; it has no loaded_balances flow
    with open(os.path.join(DATA, "snapshot_v1.dlv"), "rb") as f:
        data = f.read()
    assert data[8] == 1
    ex = Exchange.from_bytes(data)
    assert ex.markets == ["BTC", "ETH"] and ex.account_count == 3 and ex.position_count == 4
    assert ex.balance(1, exact=True) == 1000_000000 and ex.balance(3, exact=True) == 50_000000
    assert ex.core.flows()["loaded_balances"] == 0
    # the state hash of a state without loaded balances is the one the old build printed
    assert ex.state_hash() == 0x2F64E2EB5BD05AD73731C85EF508BC31
    ex.check_invariants()
    again = ex.to_bytes()
    assert again[8] == 3 and Exchange.from_bytes(again).state_hash() == ex.state_hash()
