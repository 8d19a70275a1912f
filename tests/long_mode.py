"""The long property run: ``DELEVERAGE_LONG_PROPERTIES=K`` multiplies the example count of
every property test that uses :func:`examples` by K and gives each example a deadline, so a
pathologically slow example fails with its inputs printed instead of stalling the run.
``.ci/run`` runs the property files this way under a time budget; the default (unset) keeps
the everyday counts and no deadline."""

from __future__ import annotations

import datetime
import os


def multiplier() -> int:
    raw = os.environ.get("DELEVERAGE_LONG_PROPERTIES", "").strip()
    if not raw:
        return 1
    k = int(raw)
    if k < 1:
        raise ValueError(f"DELEVERAGE_LONG_PROPERTIES must be a positive integer (got {raw!r})")
    return k


def examples(n: int) -> int:
    """``n`` examples normally, ``n * K`` in the long run."""
    return n * multiplier()


def deadline() -> datetime.timedelta | None:
    """No deadline normally; in the long run, 20 s per example (a slow example is a finding)."""
    return datetime.timedelta(seconds=20) if multiplier() > 1 else None
