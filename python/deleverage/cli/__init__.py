"""The ``deleverage`` console command.

``deleverage demo`` generates a book, crashes one market, runs the margin check and one step
of the loss waterfall, and prints the summary a risk manager would want to see.
``deleverage stress`` runs a generated or loaded book through an optional instantaneous shock
and many random mark paths, once per last-resort policy, and writes a report.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from . import demo, stress
from ._args import USAGE_ERROR, Parser

__all__ = ["main", "USAGE_ERROR"]


def _build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="deleverage", description="Exact loss-waterfall engine for derivatives exchanges.")
    parser.add_argument("--version", action="version", version=f"deleverage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    demo.add_parser(sub)
    stress.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; every user error ends in one line on stderr and exit status 2."""
    from ..errors import DeleverageError

    args = _build_parser().parse_args(argv)
    prog = f"deleverage {args.command}"
    try:
        status = demo.run(args) if args.command == "demo" else stress.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # the reader went away (`deleverage stress ... | head -1`): stop writing, quietly for
        # stdout; Python would otherwise complain again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        _say(f"{prog}: error: output closed before the command finished")
        return USAGE_ERROR
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return 130
    except (DeleverageError, ValueError, OSError) as err:
        # bad input or options the parser cannot see (combinations, files): the library's
        # message names the field and the value as given
        message = " ".join(str(err).split()) or type(err).__name__
        _say(f"{prog}: error: {message}")
        return USAGE_ERROR


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except OSError:  # stderr closed as well: nothing left to tell
        pass
