"""The journal: every state-changing call recorded, replay equal to the original after random
operation sequences (waterfall steps included), failed calls recording nothing, a journal cut
at any byte replaying up to its last whole record, damaged journals refused."""

from __future__ import annotations

import struct
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_snapshot import busy_exchange, state

import deleverage
from deleverage import Backstop, Exchange, MarketClose
from deleverage.errors import CorruptSnapshot, DeleverageError, JournalTruncated

MM = 99
HEADER = 40
HEAD = 8  # a record's head: u32 length, u32 length check


def base_exchange() -> Exchange:
    ex = Exchange(6, threads=1)
    ex.add_market("A", qty_decimals=0, price_decimals=0, maintenance_margin=0.05, initial_margin=0.10,
                  liquidation_fee=0.01, mark_price=100)
    ex.add_market("B", qty_decimals=1, price_decimals=1, maintenance_margin=0.02, initial_margin=0.04,
                  mark_price=50.0, own_insurance_pool=True)
    ex.deposit([MM, 1, 2, 3, 4], [1e9, 300.0, 300.0, 200.0, 100.0])
    ex.load_positions([1, 2, 3], ["A", "A", "B"], [5, -3, 2.5], [100, 101, 50.0], counterparty=MM)
    ex.insurance.deposit(50.0)
    return ex


def random_op(ex: Exchange, draw) -> None:
    """One call of a random kind; calls that raise are part of the test (they must record nothing)."""
    kind = draw(st.sampled_from(["deposit", "withdraw", "trade", "trades", "marks", "check", "check_out", "check_moved", "fund",
                                 "pool", "rule", "liquidate", "adl", "load", "new_market", "adl_rank", "refresh",
                                 "balances"]))
    accounts = [1, 2, 3, 4, 5]
    if kind == "deposit":
        ex.deposit(draw(st.lists(st.sampled_from(accounts + [6, 7]), min_size=1, max_size=3)), draw(st.integers(0, 500)))
    elif kind == "withdraw":
        ex.withdraw([draw(st.sampled_from(accounts))], [draw(st.integers(0, 400))])
    elif kind == "trade":
        b, s = draw(st.lists(st.sampled_from(accounts + [MM]), min_size=2, max_size=2, unique=True))
        m = draw(st.sampled_from(["A", "B"]))
        ex.trade(b, s, m, draw(st.integers(1, 5)), draw(st.integers(60, 140)) if m == "A" else draw(st.integers(300, 700)) / 10)
    elif kind == "trades":
        n = draw(st.integers(1, 3))
        rows = [draw(st.lists(st.sampled_from(accounts + [MM]), min_size=2, max_size=2, unique=True)) for _ in range(n)]
        ex.trades([r[0] for r in rows], [r[1] for r in rows], ["A"] * n, [draw(st.integers(1, 4)) for _ in range(n)],
                  [draw(st.integers(60, 140)) for _ in range(n)])
    elif kind == "marks":
        ms = draw(st.lists(st.sampled_from(["A", "B"]), min_size=1, max_size=2, unique=True))
        ex.set_marks(ms, [draw(st.integers(40, 160)) if m == "A" else draw(st.integers(200, 800)) / 10 for m in ms])
    elif kind == "check":
        ex.check_margin()
    elif kind == "check_out":  # a full check written into an earlier report
        exact = draw(st.booleans())
        ex.check_margin(exact=exact, out=ex.check_margin(exact=exact))
    elif kind == "check_moved":
        ex.check_margin([draw(st.sampled_from(["A", "B"]))])
    elif kind == "fund":
        ex.insurance.deposit(draw(st.integers(0, 100)), draw(st.sampled_from([None, "B"])))
    elif kind == "pool":
        ex.insurance.use_own_pool("A")
    elif kind == "rule":
        ex.insurance.set_drawdown_rule(draw(st.sampled_from([0.1, 0.3, 1.0])), draw(st.integers(1, 3)))
    elif kind == "liquidate":
        if draw(st.booleans()):
            executor = MarketClose(MM, slippage_bps=draw(st.sampled_from([0, 50, 300])), partial=draw(st.booleans()))
        else:
            executor = Backstop(MM)
        mode = draw(st.sampled_from(["close", "haircut"]))
        policy = draw(st.sampled_from(["queue", "pro_rata", "capped_pro_rata", "risk_aware", "min_max_lots", "random_walk"]
                                      + (["funding_index"] if mode == "haircut" else [])))
        options = {"theta": draw(st.sampled_from(["deficit", 0.5, 1.0]))}
        if policy == "capped_pro_rata":
            options["cap"] = draw(st.sampled_from([0.2, 0.7]))
        if policy == "risk_aware":
            options["g"] = draw(st.sampled_from(["linear", "power:1.5", "excess:0.5"]))
        if policy == "min_max_lots":
            options["lot"] = draw(st.sampled_from([1, 3]))
        if policy == "random_walk":
            options["seed"] = draw(st.integers(0, 2**64 - 1))
        if draw(st.booleans()):  # a per-account call: the journal records the accounts too
            options["accounts"] = draw(st.lists(st.sampled_from(accounts + [MM]), max_size=3))
        ex.liquidate(executor=executor, mode=mode, policy=policy, ranking=draw(st.sampled_from(["bitmex", "binance", "hyperliquid"])),
                     adl_price=draw(st.sampled_from(["bankruptcy", "mark", "previous_mark"])), **options)
    elif kind == "adl":
        ex.adl_ranking(draw(st.sampled_from(["A", "B"])), ranking=draw(st.sampled_from(["bitmex", "binance"])))
    elif kind == "adl_rank":
        ex.adl_rank(draw(st.sampled_from(accounts)), draw(st.sampled_from(["A", "B"])), ranking=draw(st.sampled_from(["bitmex", "binance"])))
    elif kind == "refresh":
        ex.set_adl_refresh(draw(st.sampled_from(["exact", "interval"])), every=draw(st.integers(1, 3)))
    elif kind == "load":
        a = draw(st.sampled_from([4, 5, 6]))
        ex.load_positions([a], ["B"], [draw(st.sampled_from([-1.5, 2.0]))], [50.0], counterparty=MM)
    elif kind == "balances":  # an import's balances, negative ones included
        ex.load_balances([draw(st.sampled_from(accounts + [8]))], [draw(st.integers(-50, 500))])
    elif kind == "new_market":
        ex.add_market(f"N{ex.account_count}", qty_decimals=0, price_decimals=2, maintenance_margin=0.1, initial_margin=0.2,
                      tiers=[(1000, 0.1, 0.2), (None, 0.2, 0.4)])


@settings(max_examples=40)
@given(st.data())
def test_replay_equals_the_original(tmp_path_factory, data) -> None:
    tmp = tmp_path_factory.mktemp("journal")
    ex = base_exchange()
    for _ in range(data.draw(st.integers(0, 4))):  # some history before the snapshot
        try:
            random_op(ex, data.draw)
        except DeleverageError:
            pass
    ex.save(tmp / "s.snap")
    ex.open_journal(tmp / "j.log")
    written = 0
    for _ in range(data.draw(st.integers(1, 25))):
        before_hash, before_records = ex.state_hash(), ex.journal_records
        try:
            random_op(ex, data.draw)
        except DeleverageError:
            # a call that raises changes nothing and records nothing
            assert ex.state_hash() == before_hash
            assert ex.journal_records == before_records
        written = ex.journal_records
    ex.close_journal()
    assert ex.journal_records is None
    back = Exchange.replay(tmp / "s.snap", tmp / "j.log")
    assert back.replayed_records == written
    assert not back.journal_truncated
    assert back.state_hash() == ex.state_hash()
    assert state(back) == state(ex)
    back.check_invariants()


@pytest.mark.parametrize("mode,policy,options", [
    ("close", "queue", {}), ("close", "pro_rata", {}), ("haircut", "queue", {}), ("haircut", "pro_rata", {}),
    ("haircut", "funding_index", {}), ("close", "risk_aware", {"g": "power:2", "cap": 0.5, "theta": 0.25}),
    ("haircut", "random_walk", {"seed": 2**63 + 5, "theta": 1.0}), ("close", "min_max_lots", {"lot": 2}),
    ("haircut", "capped_pro_rata", {"cap": 0.3})])
def test_replay_of_a_crash_with_the_last_resort(tmp_path, mode, policy, options) -> None:
    ex = base_exchange()
    ex.insurance.set_drawdown_rule(0.1, 2)
    ex.save(tmp_path / "s.snap")
    ex.open_journal(tmp_path / "j.log")
    ex.set_marks(["A"], [30])
    result = ex.liquidate(executor=MarketClose(MM, slippage_bps=100), mode=mode, policy=policy, ranking="binance", **options)
    assert result.totals.adl_closes + result.totals.haircut_total > 0  # the last resort ran
    ex.set_marks(["A", "B"], [45, 20.0])
    ex.liquidate(executor=Backstop(MM), adl_price="mark")
    ex.close_journal()
    back = Exchange.replay(tmp_path / "s.snap", tmp_path / "j.log")
    assert back.replayed_records == 4
    assert back.state_hash() == ex.state_hash()
    assert state(back) == state(ex)


def journaled_run(tmp) -> tuple[list[int], list[int]]:
    """A journal of a few calls; returns the state hash and the file size after each record."""
    ex = busy_exchange()
    ex.save(tmp / "s.snap")
    ex.open_journal(tmp / "j.log")
    hashes, sizes = [ex.state_hash()], [HEADER]
    calls = [
        lambda: ex.deposit([1, 2], [5.0, 6.0]),
        lambda: ex.set_marks(["BTC", "ETH"], [0.5, 19.0]),
        lambda: ex.trade(2, 9, "ETH", 0.5, 19.5),
        lambda: ex.check_margin(["ETH"]),
        lambda: ex.liquidate(executor=MarketClose(counterparty=9), mode="haircut", policy="pro_rata"),
        lambda: ex.insurance.deposit(1.0),
    ]
    for call in calls:
        call()
        hashes.append(ex.state_hash())
        sizes.append((tmp / "j.log").stat().st_size)
    ex.close_journal()
    return hashes, sizes


def test_journal_cut_at_every_byte(tmp_path) -> None:
    hashes, sizes = journaled_run(tmp_path)
    data = (tmp_path / "j.log").read_bytes()
    assert len(data) == sizes[-1]
    for cut in range(HEADER, len(data) + 1):
        (tmp_path / "cut.log").write_bytes(data[:cut])
        whole = max(i for i, s in enumerate(sizes) if s <= cut)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            back = Exchange.replay(tmp_path / "s.snap", tmp_path / "cut.log")
        assert back.replayed_records == whole
        assert back.journal_truncated == (cut != sizes[whole])
        assert any(issubclass(w.category, JournalTruncated) for w in caught) == back.journal_truncated
        assert back.state_hash() == hashes[whole]


def test_journal_cut_inside_its_header_is_corrupt(tmp_path) -> None:
    journaled_run(tmp_path)
    data = (tmp_path / "j.log").read_bytes()
    for cut in range(HEADER):
        (tmp_path / "cut.log").write_bytes(data[:cut])
        with pytest.raises(CorruptSnapshot):
            Exchange.replay(tmp_path / "s.snap", tmp_path / "cut.log")


def test_damaged_record_is_corrupt(tmp_path) -> None:
    _, sizes = journaled_run(tmp_path)
    data = bytearray((tmp_path / "j.log").read_bytes())
    # flip every bit of the second record (its head is covered by the tests below)
    for i in range(sizes[1] + HEAD, sizes[2]):
        for bit in range(8):
            data[i] ^= 1 << bit
            (tmp_path / "bad.log").write_bytes(bytes(data))
            with pytest.raises(CorruptSnapshot):
                Exchange.replay(tmp_path / "s.snap", tmp_path / "bad.log")
            data[i] ^= 1 << bit


def test_journal_from_another_state_is_refused(tmp_path) -> None:
    journaled_run(tmp_path)
    Exchange(6).save(tmp_path / "other.snap")
    with pytest.raises(CorruptSnapshot, match="does not start from this state"):
        Exchange.replay(tmp_path / "other.snap", tmp_path / "j.log")


def test_empty_and_foreign_journals(tmp_path) -> None:
    busy_exchange().save(tmp_path / "s.snap")
    (tmp_path / "empty.log").write_bytes(b"")
    with pytest.raises(CorruptSnapshot, match="empty"):
        Exchange.replay(tmp_path / "s.snap", tmp_path / "empty.log")
    (tmp_path / "foreign.log").write_bytes(b"hello world, not a journal at all" * 3)
    with pytest.raises(CorruptSnapshot, match="magic"):
        Exchange.replay(tmp_path / "s.snap", tmp_path / "foreign.log")


def test_future_journal_version_is_refused(tmp_path) -> None:
    journaled_run(tmp_path)
    data = bytearray((tmp_path / "j.log").read_bytes())
    struct.pack_into("<I", data, 8, 7)
    struct.pack_into("<Q", data, 32, deleverage._core.checksum64(bytes(data[:32]), 3))
    (tmp_path / "future.log").write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match="version 7 is newer"):
        Exchange.replay(tmp_path / "s.snap", tmp_path / "future.log")


def test_unknown_liquidate_key_is_refused(tmp_path) -> None:
    """A liquidate record with a setting this build does not know (a newer writer) is refused
    by name rather than silently ignored."""
    ex = busy_exchange()
    ex.save(tmp_path / "s.snap")
    ex.open_journal(tmp_path / "j.log")
    ex.liquidate(executor=MarketClose(counterparty=9))
    ex.close_journal()
    data = bytearray((tmp_path / "j.log").read_bytes())
    body = struct.unpack_from("<I", data, HEADER)[0]
    assert data[HEADER + HEAD] == 13  # the liquidate op
    # first (key, value) pair after the u32 pair count: make the key 999
    struct.pack_into("<H", data, HEADER + HEAD + 1 + 4, 999)
    struct.pack_into("<Q", data, HEADER + HEAD + body,
                     deleverage._core.checksum64(bytes(data[HEADER:HEADER + HEAD + body]), 4))
    (tmp_path / "new.log").write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match="unknown liquidate setting key 999"):
        Exchange.replay(tmp_path / "s.snap", tmp_path / "new.log")


def rewritten_first_record(data: bytes, *, op: int | None = None, body: bytes | None = None) -> bytes:
    """The journal with its first record's op byte or body replaced, its length, length check and
    checksum made right again, so that only the record's meaning is wrong."""
    length = struct.unpack_from("<I", data, HEADER)[0]
    old_op, old_body = data[HEADER + HEAD], data[HEADER + HEAD + 1:HEADER + HEAD + length]
    new = bytes([old_op if op is None else op]) + (old_body if body is None else body)
    head = struct.pack("<II", len(new), deleverage._core.journal_length_check(len(new)))
    record = head + new
    record += struct.pack("<Q", deleverage._core.checksum64(record, 4))
    return data[:HEADER] + record + data[HEADER + HEAD + length + 8:]


@pytest.mark.parametrize("op, extra, message", [
    (99, b"", "unknown record op 99"),                              # a code no command has
    (None, b"\x00", "malformed deposit record \\(1 unexpected bytes\\)"),  # a byte left over
    (4, b"", "load_positions"),                                     # a deposit body read as load_positions
])
def test_records_that_decode_to_no_command_are_refused(tmp_path, op, extra, message) -> None:
    ex = busy_exchange()
    ex.save(tmp_path / "s.snap")
    ex.open_journal(tmp_path / "j.log")
    ex.deposit([1, 2], [5.0, 6.0])
    ex.close_journal()
    data = (tmp_path / "j.log").read_bytes()
    assert data[HEADER + HEAD] == 2  # the deposit op
    length = struct.unpack_from("<I", data, HEADER)[0]
    body = data[HEADER + HEAD + 1:HEADER + HEAD + length] + extra
    (tmp_path / "bad.log").write_bytes(rewritten_first_record(data, op=op, body=body))
    with pytest.raises(CorruptSnapshot, match=message):
        Exchange.replay(tmp_path / "s.snap", tmp_path / "bad.log")


def test_a_record_with_an_unknown_enum_value_names_the_command(tmp_path) -> None:
    ex = busy_exchange()
    ex.save(tmp_path / "s.snap")
    ex.open_journal(tmp_path / "j.log")
    ex.set_adl_refresh("interval", every=2)
    ex.close_journal()
    data = (tmp_path / "j.log").read_bytes()
    assert data[HEADER + HEAD] == 18  # the set_adl_refresh op: u8 policy, i64 every
    (tmp_path / "bad.log").write_bytes(rewritten_first_record(data, body=bytes([7]) + struct.pack("<q", 2)))
    with pytest.raises(CorruptSnapshot, match="set_adl_refresh policy has unknown value 7"):
        Exchange.replay(tmp_path / "s.snap", tmp_path / "bad.log")


def test_failed_calls_write_no_record(tmp_path) -> None:
    ex = busy_exchange()
    ex.open_journal(tmp_path / "j.log")
    size = (tmp_path / "j.log").stat().st_size
    with pytest.raises(DeleverageError):
        ex.withdraw(1, 1e9)
    with pytest.raises(DeleverageError):
        ex.trade(1, 1, "BTC", 1.0, 10.0)
    with pytest.raises(DeleverageError):
        ex.set_marks(["BTC"], [-1.0])
    with pytest.raises(DeleverageError):
        ex.add_market("BTC", qty_decimals=0, price_decimals=0, maintenance_margin=0.1, initial_margin=0.2)
    assert ex.journal_records == 0
    assert (tmp_path / "j.log").stat().st_size == size
    ex.close_journal()


def test_one_journal_at_a_time(tmp_path) -> None:
    ex = busy_exchange()
    ex.open_journal(tmp_path / "a.log")
    with pytest.raises(deleverage.errors.InvalidInput, match="already open"):
        ex.open_journal(tmp_path / "b.log")
    ex.close_journal()
    ex.close_journal()  # no-op


def test_copies_and_pickles_do_not_journal(tmp_path) -> None:
    ex = busy_exchange()
    ex.open_journal(tmp_path / "j.log")
    other = ex.copy()
    other.deposit(1, 1.0)
    import pickle

    pickle.loads(pickle.dumps(ex)).deposit(1, 1.0)
    assert ex.journal_records == 0 and other.journal_records is None
    ex.close_journal()


# ------------------------------------------------- record heads: damage is named, not a cut


def forty_records(tmp_path):
    ex = Exchange(6, threads=1)
    ex.add_market("A", qty_decimals=0, price_decimals=0, maintenance_margin=0.05, initial_margin=0.1, mark_price=100)
    ex.save(tmp_path / "s.snap")
    ex.open_journal(tmp_path / "j.log")
    offsets = []
    for i in range(40):
        offsets.append((tmp_path / "j.log").stat().st_size)
        ex.deposit([1 + i % 3], [1.0 + i])
    ex.close_journal()
    return ex, offsets


@pytest.mark.parametrize("record", [0, 1, 20, 38])
@pytest.mark.parametrize("bit", [0, 7, 17, 31])
def test_damaged_length_in_the_middle_is_corrupt(tmp_path, record, bit) -> None:
    ex, offsets = forty_records(tmp_path)
    data = bytearray((tmp_path / "j.log").read_bytes())
    at = offsets[record]
    data[at + bit // 8] ^= 1 << (bit % 8)
    (tmp_path / "bad.log").write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match=f"record {record} at byte {at}"):
        Exchange.replay(tmp_path / "s.snap", tmp_path / "bad.log")


def test_every_bit_of_every_record_head_is_checked(tmp_path) -> None:
    """Any damage to a record's head (length and its check) is refused, whether it makes the
    record look shorter or longer than the file."""
    _, offsets = forty_records(tmp_path)
    data = bytearray((tmp_path / "j.log").read_bytes())
    for at in offsets:
        for byte in range(8):
            for bit in range(8):
                data[at + byte] ^= 1 << bit
                (tmp_path / "bad.log").write_bytes(bytes(data))
                with pytest.raises(CorruptSnapshot, match=f"at byte {at}"):
                    Exchange.replay(tmp_path / "s.snap", tmp_path / "bad.log")
                data[at + byte] ^= 1 << bit


def test_cut_off_tail_still_replays_with_a_warning(tmp_path) -> None:
    ex, offsets = forty_records(tmp_path)
    data = (tmp_path / "j.log").read_bytes()
    for cut in (offsets[39] + 1, offsets[39] + 7, offsets[39] + 9, len(data) - 1):
        (tmp_path / "cut.log").write_bytes(data[:cut])
        with pytest.warns(Warning, match="record"):
            back = Exchange.replay(tmp_path / "s.snap", tmp_path / "cut.log")
        assert back.replayed_records == 39 and back.journal_truncated


def test_version_1_journals_are_still_read(tmp_path) -> None:
    """Version 1 framed a record with its length alone; such files replay as before."""
    ex, offsets = forty_records(tmp_path)
    data = (tmp_path / "j.log").read_bytes()
    head = bytearray(data[:HEADER])
    struct.pack_into("<I", head, 8, 1)
    struct.pack_into("<Q", head, 32, deleverage._core.checksum64(bytes(head[:32]), 3))
    old = bytearray(head)
    for start in offsets:
        n = struct.unpack_from("<I", data, start)[0]
        rec = struct.pack("<I", n) + data[start + HEAD:start + HEAD + n]
        old += rec + struct.pack("<Q", deleverage._core.checksum64(rec, 4))
    (tmp_path / "v1.log").write_bytes(bytes(old))
    back = Exchange.replay(tmp_path / "s.snap", tmp_path / "v1.log")
    assert back.replayed_records == 40 and back.state_hash() == ex.state_hash()
