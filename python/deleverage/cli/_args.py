"""Argument types and the parser class shared by the commands."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..errors import InvalidInput
from ..waterfall import POLICIES, policy_spec

#: exit status of every user error (bad options, bad input, an unwritable output, a closed pipe)
USAGE_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the message and where to find help, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative (got {value})")
    return value


def fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (got {text})")
    return v


def theta(text: str) -> str:
    return text if text == "deficit" else str(fraction(text))


def policy_list(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one policy")
    for name in names:
        try:
            policy_spec(name, POLICIES)
        except InvalidInput as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a policy is listed twice")
    return names
