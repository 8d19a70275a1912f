"""Snapshots: bit-exact round trips (file, bytes, pickle), and every kind of bad file raising
CorruptSnapshot without crashing or leaving partial state."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
from books import two_market_exchange

import deleverage
from deleverage import Exchange
from deleverage.errors import CorruptSnapshot
from deleverage.executors import MarketClose

HEADER = 40


def busy_exchange() -> Exchange:
    """A small book that has been through trades, a waterfall step with ADL, fund
    movements, an own pool, a drawdown rule and tiers: every part of the state is non-trivial."""
    ex = Exchange(6, threads=1)
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, maintenance_margin=0.05, initial_margin=0.10,
                  liquidation_fee=0.01, tiers=[(10_000, 0.05, 0.10), (None, 0.10, 0.20)])
    ex.add_market("ETH", qty_decimals=2, price_decimals=2, maintenance_margin=0.02, initial_margin=0.04,
                  own_insurance_pool=True, mark_price=20.0)
    ex.deposit([1, 2, 3, 4, 9], [50.0, 1000.0, 50.0, 10.0, 1e6])
    ex.trade(1, 2, "BTC", 2.0, 100.0)
    ex.trade(3, 2, "ETH", 1.5, 20.0)
    ex.trade(4, 2, "BTC", 0.1, 101.0)
    ex.set_marks(["BTC", "ETH"], [100.0, 21.0])
    ex.insurance.deposit(5.0)
    ex.insurance.set_drawdown_rule(0.3, 3)
    ex.check_margin()
    ex.set_marks(["BTC"], [70.0])
    ex.liquidate(executor=MarketClose(counterparty=9, slippage_bps=50))
    return ex


def state(ex: Exchange) -> dict:
    """Everything observable, exact."""
    pos = ex.positions(exact=True)
    margin = ex.check_margin(exact=True)
    ledger = ex.insurance.ledger(exact=True)
    return {
        "markets": ex.markets,
        "info": [ex.market_info(m) for m in ex.markets],
        "accounts": ex.account_ids().tolist(),
        "balances": [ex.balance(a, exact=True) for a in ex.account_ids()],
        "pos": [getattr(pos, f).tolist() for f in ("account", "market", "size", "entry_notional")],
        "margin": [getattr(margin, f).tolist() for f in ("account", "equity", "maintenance", "initial")],
        "marks": ex.marks(exact=True).tolist(),
        "prev": [ex.core.previous_mark(m) for m in range(len(ex.markets))],
        "pools": [ex.insurance.balance(p, exact=True) for p in range(ex.insurance.pool_count)],
        "ledger": repr(ledger),
        "history": repr(ex.insurance.history(exact=True)),
        "step": ex.step,
        "flows": ex.core.flows(),
        "money_decimals": ex.money_decimals,
    }


def test_round_trip_through_a_file_is_bit_exact(tmp_path) -> None:
    ex = busy_exchange()
    assert ex.step == 1 and len(ex.insurance.ledger()) > 0
    before = state(ex)
    path = tmp_path / "book.snap"
    ex.save(path)
    back = Exchange.load(path)
    assert back.state_hash() == ex.state_hash()
    assert state(back) == before
    back.check_invariants()
    # the written bytes are a pure function of the state
    assert path.read_bytes() == ex.to_bytes() == back.to_bytes()


def test_round_trip_then_identical_future() -> None:
    """The loaded copy and the original evolve identically (caches, holder order and the
    incremental check's notion of 'moved' are all restored)."""
    ex = busy_exchange()
    back = Exchange.from_bytes(ex.to_bytes())
    for e in (ex, back):
        e.set_marks(["ETH"], [15.0])
        e.check_margin(["ETH"])
        e.set_marks(["BTC"], [60.0])
        e.liquidate(executor=MarketClose(counterparty=9), mode="haircut", policy="pro_rata")
    assert state(back) == state(ex)
    assert back.state_hash() == ex.state_hash()


def test_pickle_round_trip() -> None:
    ex = busy_exchange()
    again = pickle.loads(pickle.dumps(ex))
    assert isinstance(again, Exchange)
    assert again.state_hash() == ex.state_hash()
    assert state(again) == state(ex)
    again.deposit(1, 1.0)  # independent
    assert again.state_hash() != ex.state_hash()


def test_empty_exchange_round_trips() -> None:
    ex = Exchange(2)
    back = Exchange.from_bytes(ex.to_bytes())
    assert back.money_decimals == 2 and back.markets == [] and back.account_count == 0
    assert back.state_hash() == ex.state_hash()


def test_header_layout() -> None:
    """Magic, version 3, flags 0, payload length (docs/durability.md)."""
    data = two_market_exchange().to_bytes()
    magic, version, flags, length = struct.unpack_from("<8sIIQ", data, 0)
    assert magic == b"DLVSNAP\0" and version == 3 and flags == 0 and length == len(data) - HEADER


# ---------------------------------------------------------------- corrupt files

def small_snapshot() -> bytes:
    ex = Exchange(6, threads=1)
    ex.add_market("X", qty_decimals=0, price_decimals=0, maintenance_margin=0.1, initial_margin=0.2, mark_price=10)
    ex.deposit([1, 2], [100.0, 100.0])
    ex.trade(1, 2, "X", 3, 10)
    return ex.to_bytes()


def test_every_truncation_raises() -> None:
    data = small_snapshot()
    for n in range(len(data)):
        with pytest.raises(CorruptSnapshot):
            Exchange.from_bytes(data[:n])


def test_every_single_bit_flip_raises() -> None:
    data = bytearray(small_snapshot())
    for i in range(len(data)):
        for bit in range(8):
            data[i] ^= 1 << bit
            with pytest.raises(CorruptSnapshot):
                Exchange.from_bytes(bytes(data))
            data[i] ^= 1 << bit
    Exchange.from_bytes(bytes(data))  # restored: still valid


def test_empty_foreign_and_future_files(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(CorruptSnapshot, match="empty"):
        Exchange.load(empty)
    foreign = tmp_path / "foreign.png"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CorruptSnapshot, match="magic"):
        Exchange.load(foreign)
    with pytest.raises(CorruptSnapshot):
        Exchange.from_bytes(b"DLVSNAP\0")
    # a well-formed header of a later version: refused by name
    data = bytearray(small_snapshot())
    struct.pack_into("<I", data, 8, 4)
    struct.pack_into("<Q", data, 32, deleverage._core.checksum64(bytes(data[:32]), 2))
    with pytest.raises(CorruptSnapshot, match="version 4 is newer"):
        Exchange.from_bytes(bytes(data))


def test_valid_checksum_but_inconsistent_contents_raise() -> None:
    """A payload re-checksummed after an edit (not damage but a bad writer) is still
    checked value by value: here, a balance changed breaks conservation."""
    data = bytearray(small_snapshot())
    ex = Exchange.from_bytes(bytes(data))
    # the balances column follows the ids column: find account 1's balance by value
    bal = struct.pack("<q", ex.balance(1, exact=True))
    at = bytes(data).rindex(bal)
    struct.pack_into("<q", data, at, ex.balance(1, exact=True) + 1)
    struct.pack_into("<Q", data, 24, deleverage._core.checksum64(bytes(data[HEADER:]), 1))
    struct.pack_into("<Q", data, 32, deleverage._core.checksum64(bytes(data[:32]), 2))
    with pytest.raises(CorruptSnapshot, match="conservation"):
        Exchange.from_bytes(bytes(data))


def test_huge_counts_do_not_allocate() -> None:
    """A count field claiming 2^60 items fails on the bytes actually present."""
    data = bytearray(small_snapshot())
    ex = Exchange.from_bytes(bytes(data))
    # the account count (u64 2) precedes the ids column [1, 2]
    at = bytes(data).index(struct.pack("<Qqq", 2, 1, 2))
    struct.pack_into("<Q", data, at, 1 << 60)
    struct.pack_into("<Q", data, 24, deleverage._core.checksum64(bytes(data[HEADER:]), 1))
    struct.pack_into("<Q", data, 32, deleverage._core.checksum64(bytes(data[:32]), 2))
    with pytest.raises(CorruptSnapshot, match="account count"):
        Exchange.from_bytes(bytes(data))
    assert ex.account_count == 2


def test_failed_load_leaves_the_destination_untouched(tmp_path) -> None:
    """load is a classmethod: a bad file produces no exchange at all; existing ones are unaffected."""
    ex = busy_exchange()
    h = ex.state_hash()
    bad = tmp_path / "bad.snap"
    bad.write_bytes(ex.to_bytes()[:-1])
    with pytest.raises(CorruptSnapshot):
        Exchange.load(bad)
    assert ex.state_hash() == h


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "book.snap"
    old = two_market_exchange()
    old.save(path)
    before = path.read_bytes()
    # make the directory read-only: the temporary file cannot be created
    if os.geteuid() == 0:
        # root ignores permissions: fail by putting a directory where the temporary goes
        (tmp_path / f"book.snap.tmp.{os.getpid()}").mkdir()
    else:
        tmp_path.chmod(0o500)
    try:
        with pytest.raises(deleverage.errors.DeleverageError, match="cannot create"):
            busy_exchange().save(path)
    finally:
        tmp_path.chmod(0o700)
    assert path.read_bytes() == before
    assert Exchange.load(path).state_hash() == old.state_hash()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["book.snap"]


def test_missing_file_is_not_corrupt(tmp_path) -> None:
    with pytest.raises(deleverage.errors.DeleverageError, match="cannot open"):
        Exchange.load(tmp_path / "nope.snap")


def test_positions_order_and_entries_preserved() -> None:
    ex = busy_exchange()
    back = Exchange.from_bytes(ex.to_bytes())
    a, b = ex.positions(exact=True), back.positions(exact=True)
    for f in ("account", "market", "size", "entry_notional", "unrealized_pnl", "liquidation_price", "bankruptcy_price"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_symbol_that_is_not_utf8_is_corrupt() -> None:
    """Found by fuzz/fuzz_snapshot.py: a symbol's bytes changed to invalid UTF-8 (checksums
    repaired) must be refused, not crash the Python wrapper when it decodes the symbol."""
    data = bytearray(small_snapshot())
    at = bytes(data).index(struct.pack("<I", 1) + b"X")
    data[at + 4] = 0xBF
    struct.pack_into("<Q", data, 24, deleverage._core.checksum64(bytes(data[HEADER:]), 1))
    struct.pack_into("<Q", data, 32, deleverage._core.checksum64(bytes(data[:32]), 2))
    with pytest.raises(CorruptSnapshot, match="UTF-8"):
        Exchange.from_bytes(bytes(data))


def test_many_markets_round_trip() -> None:
    """Regression: with a large market section the writer's buffer grew while it held
    pointers into it (caught by the benchmark's 100-market book)."""
    from deleverage.books import sample_exchange

    ex = sample_exchange(5000, 500, 100, threads=1)
    for m in range(0, 100, 7):
        ex.insurance.use_own_pool(m)
    back = Exchange.from_bytes(ex.to_bytes())
    assert back.state_hash() == ex.state_hash()
    assert back.to_bytes() == ex.to_bytes()
    back.check_invariants()


def test_export_parquet(tmp_path) -> None:
    import pandas as pd

    ex = busy_exchange()
    paths = ex.export_parquet(tmp_path / "out")
    assert set(paths) == {"accounts", "positions", "ledger"}
    accounts = pd.read_parquet(paths["accounts"])
    assert accounts["account"].tolist() == ex.account_ids().tolist()
    assert accounts["balance"].tolist() == [ex.balance(a, exact=True) for a in ex.account_ids()]
    positions = pd.read_parquet(paths["positions"])
    pos = ex.positions(exact=True)
    assert positions["size"].tolist() == pos.size.tolist()
    assert positions["entry_notional"].tolist() == pos.entry_notional.tolist()
    assert positions["symbol"].tolist() == [ex.markets[m] for m in pos.market]
    assert str(positions["size"].dtype) == "int64"
    ledger = pd.read_parquet(paths["ledger"])
    assert ledger["amount"].tolist() == ex.insurance.ledger(exact=True).amount.tolist()
    assert len(ledger) == 2 and ledger["amount"].sum() == ex.insurance.balance(0, exact=True)
