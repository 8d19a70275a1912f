"""The one parser of policy names written "policy" or "mode:policy" (the command line, stress)."""

from __future__ import annotations

import pytest

from deleverage.errors import InvalidInput
from deleverage.waterfall import POLICIES, default_mode, policy_spec


def test_names_and_modes() -> None:
    assert policy_spec("queue") == {"policy": "queue"}
    assert policy_spec("haircut:pro_rata") == {"policy": "pro_rata", "mode": "haircut"}
    assert policy_spec("close:min_max_lots") == {"policy": "min_max_lots", "mode": "close"}
    # a haircut-only policy implies its mode
    assert policy_spec("funding_index") == {"policy": "funding_index", "mode": "haircut"}
    assert (default_mode("funding_index"), default_mode("queue")) == ("haircut", "close")
    assert policy_spec("none") == {"policy": "none"}


@pytest.mark.parametrize("name, message", [("fifo", "unknown policy 'fifo'"), ("both:queue", "unknown mode 'both'"),
                                           ("haircut:", "unknown policy ''")])
def test_unknown_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        policy_spec(name)


def test_a_restricted_list_refuses_the_others() -> None:
    with pytest.raises(InvalidInput, match="unknown policy 'none'"):
        policy_spec("none", POLICIES)


def test_stress_and_the_command_line_take_the_same_spellings() -> None:
    import argparse

    import deleverage
    from deleverage import WaterfallSpec
    from deleverage._stress import _labelled_specs
    from deleverage.cli._args import policy_list

    mm = deleverage.MarketClose(counterparty=0)
    assert _labelled_specs(["haircut:pro_rata", "funding_index"], mm) == [
        ("haircut:pro_rata", WaterfallSpec(executor=mm, policy="pro_rata", mode="haircut")),
        ("funding_index", WaterfallSpec(executor=mm, policy="funding_index", mode="haircut"))]
    with pytest.raises(InvalidInput, match=r"policies\[1\]: unknown policy 'fifo'"):
        _labelled_specs(["queue", "fifo"], mm)
    assert policy_list("queue,haircut:funding_index") == ["queue", "haircut:funding_index"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown policy 'none'"):
        policy_list("none")
    assert deleverage.waterfall.HAIRCUT_ONLY == ("funding_index",)
