"""Shared pieces of the snapshot benchmarks: the timed operations and their baselines.

Baselines for N = the snapshot's size in bytes, all on fresh memory like the operations they
are compared with (a loaded engine is new memory; a saved file is new file data):

* ``copy``: copy N bytes into a newly allocated numpy array (``src.copy()``),
* ``file_write``: write N bytes to a new file and fsync it (what an atomic save must do),
* ``file_read``: read an N-byte file (in the page cache) into new memory,
* ``engine_copy``: ``Exchange.copy()``, the same state copied in memory (no file, no format,
  no checks): what building the loaded engine's own columns costs at the least.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deleverage import Exchange


def operations(ex: Exchange, folder: Path) -> dict[str, Callable[[], Any]]:
    snap = folder / "book.snap"
    raw = folder / "raw.bin"
    ex.save(snap)
    size = snap.stat().st_size
    src = np.frombuffer(snap.read_bytes(), dtype=np.uint8).copy()
    raw.write_bytes(src.tobytes())

    def file_write() -> None:
        with open(raw, "wb") as f:
            f.write(memoryview(src))
            f.flush()
            os.fsync(f.fileno())

    def file_read() -> bytes:
        with open(raw, "rb") as f:
            return f.read()

    return {
        "save": lambda: ex.save(snap),
        "load": lambda: Exchange.load(snap),
        "copy": lambda: src.copy(),
        "file_write": file_write,
        "file_read": file_read,
        "engine_copy": ex.copy,
        "_size": lambda: size,
    }


def ratios(best: dict[str, float]) -> dict[str, float]:
    return {
        "save_over_copy": best["save"] / best["copy"],
        "load_over_copy": best["load"] / best["copy"],
        "save_over_file_write": best["save"] / best["file_write"],
        "load_over_file_read": best["load"] / best["file_read"],
        "load_over_engine_copy": best["load"] / best["engine_copy"],
    }
