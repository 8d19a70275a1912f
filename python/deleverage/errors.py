"""Exceptions raised by deleverage.

Every error derives from :class:`DeleverageError`; input errors also derive from the
matching builtin (``ValueError``, ``KeyError``, ``OverflowError``) so generic handlers keep
working. Messages name the offending field and, for arrays, the index.
"""

from __future__ import annotations

import re
from typing import Any, Optional

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


# numpy scalar reprs (``np.float64(2.5)``, ``np.int64(7)``) in a message: shown as the plain number
_NUMPY_REPR = re.compile(r"\bnp\.(?:float|int|uint)\d*\(([^()]*)\)")
# "field[index]: ..." (the engine's and the Python layer's per-row messages start this way)
_AT = re.compile(r"^([A-Za-z_][\w.]*)\[(\d+)\](?: \([^()]*\))?: ")


class DeleverageError(Exception):
    """Base class of every error raised by deleverage.

    ``field`` and ``index`` are the offending argument and row when the message names them
    (``"prices[1]: ..."``), else None. Numbers in messages are plain (``2.5``, never
    ``np.float64(2.5)``) and in the units the caller used.
    """

    def __init__(self, *args: Any) -> None:
        if args and isinstance(args[0], str):
            args = (_NUMPY_REPR.sub(r"\1", args[0]), *args[1:])
        super().__init__(*args)

    @property
    def field(self) -> Optional[str]:
        m = _AT.match(str(self.args[0])) if self.args else None
        return m.group(1) if m else None

    @property
    def index(self) -> Optional[int]:
        m = _AT.match(str(self.args[0])) if self.args else None
        return int(m.group(2)) if m else None

    @property
    def detail(self) -> str:
        """The message without its ``field[index]: `` prefix."""
        text = str(self.args[0]) if self.args else ""
        m = _AT.match(text)
        return text[m.end():] if m else text


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
