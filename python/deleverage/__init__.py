"""deleverage: exact, fast loss-waterfall engine for derivatives exchanges.

The state (markets, accounts, positions, marks) lives in a C++ core in integer fixed
point; this package is a thin typed layer over it. Start with :class:`Exchange`.
"""

from __future__ import annotations

from . import errors
from .exchange import Exchange
from .reports import MarginReport, PositionReport

__all__ = ["Exchange", "MarginReport", "PositionReport", "errors"]
__version__ = "0.1.0"
