"""The state hash: independent of the order accounts and positions were created in, changed
by any single value; and the checksum of docs/durability.md recomputed in pure Python."""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

import deleverage
from deleverage import Exchange

MM = 0


@st.composite
def books(draw):
    """Accounts with deposits and a balanced set of positions (the market maker takes the
    opposite of each row), as raw integer rows."""
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(st.integers(1, 10**12), min_size=n, max_size=n, unique=True))
    deposits = [(a, draw(st.integers(0, 10**9))) for a in ids]
    rows = []
    for a in ids:
        for m in draw(st.lists(st.integers(0, 2), max_size=3, unique=True)):
            rows.append((a, m, draw(st.integers(-1000, 1000).filter(bool)), draw(st.integers(1, 10**5))))
    return deposits, rows


def build(deposits, rows, order_seed: int, split: bool) -> Exchange:
    rng = random.Random(order_seed)
    ex = Exchange(6, threads=1)
    for m in range(3):
        ex.add_market(f"M{m}", qty_decimals=1, price_decimals=2, mark_decimals=2, maintenance_margin=0.05, initial_margin=0.1,
                      mark_price=12.5 * (m + 1))
    deposits = list(deposits)
    rows = list(rows)
    rng.shuffle(deposits)
    rng.shuffle(rows)
    ex.deposit([MM], [10**15], exact=True)
    # deposits one at a time or in a batch: the same accounts either way
    if split:
        for a, v in deposits:
            ex.deposit([a], [v], exact=True)
    else:
        ex.deposit([a for a, _ in deposits], [v for _, v in deposits], exact=True)
    # market maker rows balance each market
    net = {m: 0 for m in range(3)}
    for _, m, q, _p in rows:
        net[m] += q
    mm_rows = [(MM, m, -net[m], 1250 * (m + 1)) for m in range(3) if net[m] != 0]
    all_rows = rows + mm_rows
    rng.shuffle(all_rows)
    # each call must balance on its own: split by market (a random subset goes first)
    first = {m for m in range(3) if split and rng.random() < 0.5}
    for part in ([r for r in all_rows if r[1] in first], [r for r in all_rows if r[1] not in first]):
        if part:
            ex.load_positions([r[0] for r in part], [r[1] for r in part], [r[2] for r in part], [r[3] for r in part],
                              exact=True)
    return ex


@settings(max_examples=60)
@given(books(), st.integers(0, 2**32), st.integers(0, 2**32))
def test_hash_is_independent_of_insertion_order(book, seed_a, seed_b) -> None:
    deposits, rows = book
    a = build(deposits, rows, seed_a, split=False)
    b = build(deposits, rows, seed_b, split=True)
    assert a.state_hash() == b.state_hash()
    assert 0 <= a.state_hash() < 2**128


@settings(max_examples=60)
@given(books(), st.integers(0, 2**32), st.data())
def test_any_single_change_changes_the_hash(book, seed, data) -> None:
    deposits, rows = book
    base = build(deposits, rows, seed, split=False).state_hash()
    change = data.draw(st.sampled_from(["deposit", "id", "size", "price", "mark", "fund", "market"]))
    deposits, rows = list(deposits), list(rows)
    if change == "deposit":
        i = data.draw(st.integers(0, len(deposits) - 1))
        deposits[i] = (deposits[i][0], deposits[i][1] + data.draw(st.sampled_from([1, -1 if deposits[i][1] else 1, 10**6])))
    elif change == "id":
        i = data.draw(st.integers(0, len(deposits) - 1))
        old = deposits[i][0]
        new = old + 10**12 + 1  # outside the drawn range: unique
        deposits[i] = (new, deposits[i][1])
        rows = [(new if a == old else a, m, q, p) for a, m, q, p in rows]
    elif change in ("size", "price") and rows:
        i = data.draw(st.integers(0, len(rows) - 1))
        a, m, q, p = rows[i]
        rows[i] = (a, m, q + (1 if q != -1 else 2), p) if change == "size" else (a, m, q, p + 1)
    other = build(deposits, rows, seed, split=False)
    if change == "mark":
        other.set_marks(["M1"], [25.01])
    elif change == "fund":
        other.insurance.deposit(1, exact=True)
    elif change == "market":
        other.add_market("M3", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.05, initial_margin=0.1)
    elif change in ("size", "price") and not rows:
        other.set_marks(["M0"], [12.51])
    assert other.state_hash() != base


def test_hash_of_hand_built_equal_states() -> None:
    """Positions created by trades and by a bulk load at the same prices are the same state."""
    def base() -> Exchange:
        ex = Exchange(6, threads=1)
        ex.add_market("X", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.1, initial_margin=0.2, mark_price=10)
        return ex

    a = base()
    a.deposit([1, 2], [100.0, 100.0])
    a.trade(1, 2, "X", 3, 10)
    b = base()
    b.deposit([2, 1], [100.0, 100.0])
    b.trade(1, 2, "X", 3, 10)
    assert a.state_hash() == b.state_hash()
    b.trade(2, 1, "X", 1, 10)
    b.trade(1, 2, "X", 1, 10)  # back to the same positions, balances and entries
    assert a.state_hash() == b.state_hash()
    b.set_marks(["X"], [11])
    assert a.state_hash() != b.state_hash()


# ---------------------------------------------------------------- the checksum, independently

M64 = 2**64 - 1


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def checksum64(data: bytes, seed: int) -> int:
    """docs/durability.md, "Checksum", written from the description."""
    mult = [0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3]
    lanes = [seed ^ 0x243F6A8885A308D3, seed ^ 0x13198A2E03707344, seed ^ 0xA4093822299F31D0, seed ^ 0x082EFA98EC4E6C89]

    def rnd(acc: int, v: int, m: int) -> int:
        acc = ((acc ^ v) * m) & M64
        return acc ^ (acc >> 29)

    i = 0
    while i + 32 <= len(data):
        for k in range(4):
            lanes[k] = rnd(lanes[k], struct.unpack_from("<Q", data, i + 8 * k)[0], mult[k])
        i += 32
    while i + 8 <= len(data):
        lanes[0] = rnd(lanes[0], struct.unpack_from("<Q", data, i)[0], mult[1])
        i += 8
    tail = int.from_bytes(data[i:], "little")
    h = mix64(lanes[0])
    for v in (lanes[1], lanes[2], lanes[3], tail):
        h = mix64(h ^ v)
    return mix64(h ^ len(data))


@given(st.binary(max_size=200), st.integers(0, 2**64 - 1))
def test_checksum_matches_the_documented_definition(data, seed) -> None:
    assert deleverage._core.checksum64(data, seed) == checksum64(data, seed)


def test_snapshot_checksums_match_the_documented_definition() -> None:
    ex = Exchange(6)
    ex.add_market("X", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.1, initial_margin=0.2, mark_price=10)
    ex.deposit([1, 2], [100.0, 100.0])
    ex.trade(1, 2, "X", 3, 10)
    data = ex.to_bytes()
    assert struct.unpack_from("<Q", data, 24)[0] == checksum64(data[40:], 1)
    assert struct.unpack_from("<Q", data, 32)[0] == checksum64(data[:32], 2)
