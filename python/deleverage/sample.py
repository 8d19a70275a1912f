"""Former home of the generated sample book, kept because the docs named this import path:
the code is :mod:`deleverage.books.sample` (import from :mod:`deleverage.books`)."""

from __future__ import annotations

from .books.sample import MARKET_MAKER, SampleBook, generate_book, sample_exchange

__all__ = ["MARKET_MAKER", "SampleBook", "generate_book", "sample_exchange"]
