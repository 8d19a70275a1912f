"""Fuzz target: the snapshot loader (Exchange.from_bytes).

Oracle: every input either raises CorruptSnapshot or loads into a state that passes
check_invariants and writes back exactly the bytes it was read from. Half of the inputs get
their checksums repaired first, so mutations reach the payload parser.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports():
    from common import fix_snapshot_checksums

    from deleverage import Exchange
    from deleverage.errors import CorruptSnapshot


def test_one_input(data: bytes) -> None:
    if not data:
        return
    repair, body = data[0] & 1, data[1:]
    if repair:
        body = fix_snapshot_checksums(body)
    try:
        ex = Exchange.from_bytes(body, threads=1)
    except CorruptSnapshot:
        return
    ex.check_invariants()
    written = ex.to_bytes()
    if body[8:12] == written[8:12]:  # the current format version: a byte-exact round trip
        assert written == body, "a loaded snapshot does not write back the same bytes"
    else:  # an older version (still read) is written in the current one: the same state
        assert Exchange.from_bytes(written, threads=1).state_hash() == ex.state_hash(), \
            "an older-version snapshot does not survive a rewrite in the current version"
    assert Exchange.from_bytes(ex.to_bytes(), threads=1).state_hash() == ex.state_hash()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
