"""Books: loading a real one, generating a sample one, and named shapes of generated books.

* :mod:`deleverage.books.load` - :func:`load_book` from pandas, CSV or Parquet (the column
  schema is in that module).
* :mod:`deleverage.books.sample` - :func:`generate_book` (a :class:`SampleBook` of columns)
  and :func:`sample_exchange` (an :class:`~deleverage.Exchange` holding one).
* :mod:`deleverage.books.presets` - :class:`BookSpec`, :data:`BOOK_PRESETS`, :func:`book_preset`.
"""

from __future__ import annotations

from .load import BOOK_COLUMNS, MARKET_COLUMNS, load_book
from .presets import BOOK_PRESETS, BookSpec, book_preset
from .sample import MARKET_MAKER, SampleBook, generate_book, sample_exchange

__all__ = ["load_book", "BOOK_COLUMNS", "MARKET_COLUMNS", "generate_book", "sample_exchange", "SampleBook",
           "MARKET_MAKER", "BookSpec", "BOOK_PRESETS", "book_preset"]
