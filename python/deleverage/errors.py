"""Exceptions raised by deleverage.

Every error derives from :class:`DeleverageError`; input errors also derive from the
matching builtin (``ValueError``, ``KeyError``, ``OverflowError``) so generic handlers keep
working. Messages name the offending field and, for arrays, the index.
"""

from __future__ import annotations

__all__ = [
    "DeleverageError",
    "ConfigError",
    "InvalidInput",
    "ArithmeticOverflow",
    "UnknownId",
    "InsufficientMargin",
    "CorruptSnapshot",
    "InvariantViolation",
    "JournalTruncated",
]


class DeleverageError(Exception):
    """Base class of every error raised by deleverage."""


class ConfigError(DeleverageError, ValueError):
    """A market or engine configuration that cannot be used."""


class InvalidInput(DeleverageError, ValueError):
    """Bad arguments: NaN/inf, non-positive prices, wrong dtype, mismatched lengths, duplicates."""


class ArithmeticOverflow(DeleverageError, OverflowError):
    """A value does not fit the fixed-point range. The engine never wraps."""


class UnknownId(DeleverageError, KeyError):
    """An account or market id the exchange does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InsufficientMargin(DeleverageError):
    """A withdrawal that would leave an account below its initial margin."""


class CorruptSnapshot(DeleverageError):
    """A snapshot or journal that cannot be read back."""


class InvariantViolation(DeleverageError):
    """Conservation, zero net size or internal consistency does not hold."""


class JournalTruncated(UserWarning):
    """Warning: a journal ended inside a record; replay stopped at the last whole record."""
