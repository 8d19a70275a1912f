"""Fuzz target: the journal reader and replay (Engine.replay_bytes).

The input is a sequence of journal records (after a valid header for a fixed snapshot); whole
records get their checksums repaired, so mutations reach the record decoder and the engine.
Oracle: either CorruptSnapshot, or a replayed state that passes check_invariants and whose
record count and truncation flag agree with the bytes.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports():
    from common import journal_header, records_with_fixed_checksums, small_exchange

    import deleverage
    from deleverage.errors import CorruptSnapshot

BASE = small_exchange()
SNAPSHOT = BASE.to_bytes()
HEADER = journal_header(BASE.state_hash())


def test_one_input(data: bytes) -> None:
    journal = HEADER + records_with_fixed_checksums(data)
    try:
        engine, info = deleverage._core.Engine.replay_bytes(SNAPSHOT, journal, 1)
    except CorruptSnapshot:
        return
    engine.check_invariants()
    assert info["valid_bytes"] <= info["total_bytes"] == len(journal)
    assert info["truncated"] == (info["valid_bytes"] != len(journal))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
