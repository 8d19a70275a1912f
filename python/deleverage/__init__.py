"""deleverage: exact, fast loss-waterfall engine for derivatives exchanges.

The state (markets, accounts, positions, marks) lives in a C++ core in integer fixed
point; this package is a thin typed layer over it. Start with :class:`Exchange`.
"""

from __future__ import annotations

from . import errors, executors, metrics, scenarios
from ._stress import StressResult, stress
from .allocate import allocate
from .books import load_book
from .exchange import Exchange
from .executors import Backstop, Impact, MarketClose
from .metrics import PolicyMetrics
from .policy_lab import ComparisonTable, compare
from .reports import MarginReport, PositionReport
from .scales import MarketScales
from .waterfall import AdlRank, AdlRanking, EventTable, WaterfallResult, WaterfallTotals
from .waterfall_spec import WaterfallSpec

__all__ = [
    "Exchange",
    "allocate",
    "compare",
    "ComparisonTable",
    "PolicyMetrics",
    "metrics",
    "MarginReport",
    "PositionReport",
    "MarketScales",
    "MarketClose",
    "Backstop",
    "Impact",
    "WaterfallSpec",
    "WaterfallResult",
    "WaterfallTotals",
    "EventTable",
    "AdlRanking",
    "AdlRank",
    "errors",
    "executors",
    "scenarios",
    "stress",
    "StressResult",
    "load_book",
]
__version__ = "0.1.0"
