"""Shared pieces of the fuzz targets: a small exchange with every part of the state filled,
and helpers that repair checksums so mutated inputs reach the parsers behind them."""

from __future__ import annotations

import struct

import deleverage
from deleverage import Exchange, MarketClose

SNAPSHOT_HEADER = 40
JOURNAL_HEADER = 40


def small_exchange() -> Exchange:
    ex = Exchange(6, threads=1)
    ex.add_market("A", qty_decimals=0, price_decimals=0, maintenance_margin=0.05, initial_margin=0.1,
                  liquidation_fee=0.01, mark_price=100, tiers=[(1000, 0.05, 0.1), (None, 0.1, 0.2)])
    ex.add_market("B", qty_decimals=1, price_decimals=1, maintenance_margin=0.02, initial_margin=0.04,
                  mark_price=50.0, own_insurance_pool=True)
    ex.deposit([99, 1, 2, 3], [1e6, 300.0, 300.0, 40.0])
    ex.load_positions([1, 2, 3], ["A", "A", "B"], [5, -3, 2.5], [100, 101, 50.0], counterparty=99)
    ex.insurance.deposit(20.0)
    ex.insurance.set_drawdown_rule(0.3, 2)
    ex.set_marks(["B"], [30.0])
    ex.liquidate(executor=MarketClose(99, slippage_bps=50))
    return ex


def fix_snapshot_checksums(data: bytes) -> bytes:
    """Recompute the payload and header checksums of a snapshot-shaped input (when it is
    long enough), so the payload parser sees the mutation instead of the checksum gate."""
    if len(data) < SNAPSHOT_HEADER:
        return data
    buf = bytearray(data)
    struct.pack_into("<Q", buf, 16, len(buf) - SNAPSHOT_HEADER)
    struct.pack_into("<Q", buf, 24, deleverage._core.checksum64(bytes(buf[SNAPSHOT_HEADER:]), 1))
    struct.pack_into("<Q", buf, 32, deleverage._core.checksum64(bytes(buf[:32]), 2))
    return bytes(buf)


def journal_header(state_hash: int) -> bytes:
    head = b"DLVJRNL\0" + struct.pack("<IIQQ", 2, 0, state_hash & (2**64 - 1), state_hash >> 64)
    return head + struct.pack("<Q", deleverage._core.checksum64(head, 3))


def records_with_fixed_checksums(body: bytes) -> bytes:
    """Walk length-prefixed records and rewrite each whole record's length check and
    checksum (journal version 2 framing, docs/durability.md)."""
    buf = bytearray(body)
    at = 0
    while at + 8 <= len(buf):
        n = struct.unpack_from("<I", buf, at)[0]
        if n == 0 or at + 8 + n + 8 > len(buf):
            break
        struct.pack_into("<I", buf, at + 4, deleverage._core.journal_length_check(n))
        struct.pack_into("<Q", buf, at + 8 + n, deleverage._core.checksum64(bytes(buf[at:at + 8 + n]), 4))
        at += 8 + n + 8
    return bytes(buf)
