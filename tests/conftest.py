"""Shared test setup: import path for the helper modules, deterministic hypothesis
settings and the ``impl`` fixture that runs a test against the reference model and the
engine."""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

settings.register_profile(
    "deleverage",
    derandomize=True,
    deadline=None,
    max_examples=60,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("deleverage")


def make_impl(name, money_decimals=6):
    if name == "reference":
        from reference_model import ReferenceExchange

        return ReferenceExchange(money_decimals=money_decimals)
    from engine_adapter import EngineExchange

    return EngineExchange(money_decimals=money_decimals)


@pytest.fixture(params=["reference", "engine"])
def impl(request):
    """A factory ``impl(money_decimals=6)`` for the implementation under test."""
    return lambda money_decimals=6: make_impl(request.param, money_decimals)
