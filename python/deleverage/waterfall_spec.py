"""One waterfall configuration: :class:`WaterfallSpec`, what :meth:`Exchange.liquidate`,
:func:`deleverage.stress`, :func:`deleverage.compare` and the command line all build and use.

A spec checks on construction everything that needs no exchange (names, which options each
policy takes, ``funding_index`` only in haircut mode, the seed's range...), with the same
errors and messages as :meth:`Exchange.liquidate`. :meth:`WaterfallSpec.engine_config` is the
one place that turns it into the compiled engine's configuration for a given exchange.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from . import _convert as cv
from . import _core
from .errors import ConfigError, InvalidInput
from .executors import Backstop, Executor, MarketClose
from .waterfall import ADL_PRICES, DEFICIT_SPLITS, LAST_RESORT_POLICIES, MODES, RANKINGS, default_mode, policy_spec

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["WaterfallSpec", "spec_of_entry", "fraction_units", "deficit_split_code"]

#: 1 in the engine's fraction units (theta and cap are passed in units of 1e-8)
FRACTION_ONE = 100_000_000
# options that only some policies take, with their defaults (the rest name the waterfall itself)
_OPTION_DEFAULTS: dict[str, Any] = {"ranking": "bitmex", "adl_price": "bankruptcy", "theta": "deficit", "cap": None,
                                    "lot": None, "g": "linear", "seed": 0, "deficit_split": None}


def fraction_units(value: Any, field: str) -> int:
    """A fraction in [0, 1] -> integer units of 1e-8 (nearest), or InvalidInput naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInput(f"{field} must be a number between 0 and 1 (got {cv.plain(value)})")
    v = float(value)
    if not np.isfinite(v) or v < 0 or v > 1:
        raise InvalidInput(f"{field} must be a number between 0 and 1 (got {cv.plain(value)})")
    return int(round(v * FRACTION_ONE))


def deficit_split_code(value: Any) -> int:
    """The engine's code of a ``deficit_split`` name, or ConfigError naming the field."""
    if not isinstance(value, str) or value not in DEFICIT_SPLITS:
        raise ConfigError(f"deficit_split must be one of {', '.join(DEFICIT_SPLITS)} (got {value!r})")
    return DEFICIT_SPLITS.index(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WaterfallSpec:
    """The configuration of one waterfall step: what :meth:`Exchange.liquidate` takes as
    keywords, checked once and reusable across exchanges, stress runs and comparisons.

    Fields (meaning and formulas in :meth:`Exchange.liquidate` and docs/waterfall.md):

    * ``executor``: a :class:`~deleverage.MarketClose` or :class:`~deleverage.Backstop`
      that closes the liquidated positions; may be left ``None`` in a spec given to
      :func:`~deleverage.stress`, :func:`~deleverage.compare` or ``liquidate(spec, executor=...)``,
      which supply theirs.
    * ``mode``: ``"close"`` (ADL closes) or ``"haircut"`` (socialized loss on profits).
    * ``policy``: the last resort, one of ``waterfall.LAST_RESORT_POLICIES`` (``"none"``: no
      last resort, bad debt); ``"funding_index"`` only in haircut mode.
    * ``ranking``: the ADL queue's score (``"bitmex"``, ``"binance"``, ``"hyperliquid"``).
    * ``adl_price``: ``"bankruptcy"``, ``"mark"`` or ``"previous_mark"``.
    * ``theta``: the severity, ``"deficit"`` (deficit matching) or a fraction in [0, 1] of
      every bankrupt position's deficit sent to the last resort (dimensionless).
    * ``cap``: the largest fraction in [0, 1] of its capacity a winner may lose
      (``capped_pro_rata``, where it is required, and ``risk_aware``).
    * ``lot``: ``min_max_lots`` only: a positive integer number of the market's lots in close
      mode; quote currency in haircut mode (integer money units of ``10**-money_decimals``
      when the call is ``exact``).
    * ``g``: ``risk_aware`` only: ``"linear"``, ``"power:k"`` or ``"excess:l0"``.
    * ``seed``: ``random_walk``: an integer in [0, 2**64).
    * ``deficit_split``: ``"loss"`` or ``"maintenance"``; ``None`` uses the exchange's.
    * ``label``: a name for the rows of :func:`~deleverage.stress` and
      :func:`~deleverage.compare` (default :attr:`name`); not part of the configuration the
      engine sees.

    Construction raises :class:`~deleverage.errors.InvalidInput` (or ``ConfigError`` for
    ``deficit_split``) naming the field, with the messages of :meth:`Exchange.liquidate`.
    What needs an exchange (an impact depth below one money unit, a haircut-mode ``lot`` in
    money units) is checked by :meth:`engine_config`. ``spec.replace(field=...)`` gives a
    changed, re-checked copy; :meth:`parse` reads ``"policy"`` or ``"mode:policy"``.
    """

    executor: Optional[Executor] = None
    mode: str = "close"
    policy: str = "queue"
    ranking: str = "bitmex"
    adl_price: str = "bankruptcy"
    theta: Union[str, float] = "deficit"
    cap: Optional[float] = None
    lot: Optional[float] = None
    g: str = "linear"
    seed: int = 0
    deficit_split: Optional[str] = None
    label: Optional[str] = None

    def __post_init__(self) -> None:
        if self.executor is not None and not isinstance(self.executor, (MarketClose, Backstop)):
            raise InvalidInput(f"executor must be a MarketClose or a Backstop (got {type(self.executor).__name__})")
        for name, allowed in (("mode", MODES), ("policy", LAST_RESORT_POLICIES), ("ranking", RANKINGS),
                              ("adl_price", ADL_PRICES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise InvalidInput(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
        if self.mode == "close" and self.policy == "funding_index":
            raise InvalidInput("policy 'funding_index' is a haircut policy: use mode='haircut'")
        self._theta_units()
        self._check_options()
        if self.executor is not None:
            cv.integers(self._executor_account(), "executor account")
        if self.deficit_split is not None:
            deficit_split_code(self.deficit_split)
        if self.label is not None and not isinstance(self.label, str):
            raise InvalidInput(f"label must be a string (got {self.label!r})")

    def _check_options(self) -> None:
        policy = self.policy
        if self.cap is not None and policy not in ("capped_pro_rata", "risk_aware"):
            raise InvalidInput(f"cap is not used by policy {policy!r} (only capped_pro_rata and risk_aware)")
        if policy == "capped_pro_rata" and self.cap is None:
            raise InvalidInput("policy 'capped_pro_rata' needs cap: the largest fraction of its capacity a winner may lose")
        if self.cap is not None:
            fraction_units(self.cap, "cap")
        if self.lot is not None and policy != "min_max_lots":
            raise InvalidInput(f"lot is not used by policy {policy!r} (only min_max_lots)")
        if self.lot is not None:
            if self.mode == "close":
                self._lot_units(exact=True, money_decimals=0)
            elif isinstance(self.lot, (int, float, np.integer, np.floating)) and not isinstance(self.lot, bool) and self.lot <= 0:
                raise InvalidInput(f"lot must be positive (got {self.lot!r})")
        if not isinstance(self.g, str):
            raise InvalidInput(f"g must be a string: 'linear', 'power:k' or 'excess:l0' (got {self.g!r})")
        if self.g != "linear" and policy != "risk_aware":
            raise InvalidInput(f"g is not used by policy {policy!r} (only risk_aware)")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
            raise InvalidInput(f"seed must be an integer in [0, 2**64) (got {seed!r})")

    @classmethod
    def parse(cls, name: str, **options: Any) -> "WaterfallSpec":
        """A spec from a policy written ``"policy"`` or ``"mode:policy"`` (as the command line
        and :func:`deleverage.stress` take them, :func:`waterfall.policy_spec`) and the other
        fields as keywords. A mode written in ``name`` wins over ``options["mode"]``; the mode a
        haircut-only policy implies (``"funding_index"`` alone: haircut) gives way to it."""
        if not isinstance(name, str):
            raise InvalidInput(f"policy must be a name such as 'queue' or 'haircut:pro_rata' (got {name!r})")
        parsed = policy_spec(name)
        explicit = ":" in name
        implied = {} if explicit else {k: v for k, v in parsed.items() if k == "mode"}
        return cls(**{**implied, **options, **(parsed if explicit else {"policy": parsed["policy"]})})

    def replace(self, **changes: Any) -> "WaterfallSpec":
        """A copy with some fields changed, checked again."""
        return dataclasses.replace(self, **changes)

    @property
    def name(self) -> str:
        """``label`` when given, else the policy as :meth:`parse` reads it (the mode only when it
        is not the policy's default) followed by the options that differ from their defaults:
        ``"capped_pro_rata (cap=0.5)"``, ``"haircut:pro_rata"``."""
        if self.label is not None:
            return self.label
        head = self.policy if self.mode == default_mode(self.policy) else f"{self.mode}:{self.policy}"
        extra = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"{head} ({extra})" if extra else head

    def options(self) -> dict[str, Any]:
        """The fields other than executor, mode, policy and label that differ from their defaults."""
        return {k: getattr(self, k) for k, default in _OPTION_DEFAULTS.items() if getattr(self, k) != default}

    def keywords(self) -> dict[str, Any]:
        """The :meth:`Exchange.liquidate` keywords of this spec without the executor: mode,
        policy and the options that differ from their defaults."""
        return {"mode": self.mode, "policy": self.policy, **self.options()}

    # ------------------------------------------------------------------ the engine's configuration
    def _executor_account(self) -> int:
        ex = self.executor
        return ex.counterparty if isinstance(ex, MarketClose) else ex.account  # type: ignore[union-attr]

    def _theta_units(self) -> int:
        return -1 if isinstance(self.theta, str) and self.theta == "deficit" else fraction_units(self.theta, "theta")

    def _lot_units(self, *, exact: bool, money_decimals: int) -> int:
        if self.lot is None:
            return 1
        if self.mode == "close" or exact:
            units = int(cv.integers(self.lot, "lot")[0])
        else:
            units = int(cv.to_fixed(self.lot, money_decimals, "lot", exact=False, on_grid=False)[0])
        if units <= 0:
            raise InvalidInput(f"lot must be positive (got {self.lot!r})")
        return units

    def _executor_config(self, money_decimals: int) -> tuple[int, int, int, int, int, bool]:
        """(kind, account, slippage in 1e-8, impact rate in 1e-8, impact depth in money units, partial)."""
        executor = self.executor
        if executor is None:
            raise InvalidInput("executor must be a MarketClose or a Backstop (got NoneType): give the spec or the call one")
        account = int(cv.integers(self._executor_account(), "executor account")[0])
        if isinstance(executor, Backstop):
            return 1, account, 0, 0, 0, False
        impact = executor.impact
        slip = int(round(executor.slippage_bps * 10_000))
        impact_rate = int(round(impact.bps_per_depth * 10_000)) if impact else 0
        depth = int(cv.to_fixed(impact.depth, money_decimals, "impact.depth", exact=False, on_grid=False)[0]) if impact else 0
        if impact and depth <= 0:
            # a depth of 0 units would switch the impact off without a word
            raise ConfigError(f"impact.depth {impact.depth!r} is less than one money unit (10**-{money_decimals})")
        return 0, account, slip, impact_rate, depth, bool(executor.partial)

    def engine_config(self, exchange: "Exchange", *, exact: bool = False) -> _core.WaterfallConfig:
        """The compiled engine's waterfall configuration of this spec for ``exchange``: the one
        place that turns a waterfall into the ``_core.WaterfallConfig`` that
        ``_core.Engine.liquidate`` and ``_core.run_stress`` take (the executor's kind and
        account, rates in 1e-8, the impact depth in money units; mode, policy, ranking and ADL
        price as the engine's enums; theta and cap in 1e-8, the lot, g, the seed and the
        deficit split; ``deficit_split=None`` is the exchange's). ``exact`` only says the unit
        of a haircut-mode ``lot``: money units instead of quote currency."""
        md = exchange.money_decimals
        kind, account, slip, impact_rate, depth, partial = self._executor_config(md)
        cap_units = FRACTION_ONE if self.cap is None else fraction_units(self.cap, "cap")
        lot_units = self._lot_units(exact=exact, money_decimals=md)
        split = exchange.deficit_split if self.deficit_split is None else self.deficit_split
        return _core.WaterfallConfig(
            executor=_core.ExecutorSpec(kind=_core.ExecutorKind(kind), account=account, slippage_rate=slip,
                                        impact_rate=impact_rate, impact_depth=depth, partial=partial),
            mode=_core.WaterfallMode.__members__[self.mode], policy=_core.Policy.__members__[self.policy],
            ranking=_core.Ranking.__members__[self.ranking], adl_price=_core.AdlPrice.__members__[self.adl_price],
            theta=self._theta_units(), cap=cap_units, lot=lot_units, g=_core.RiskFunction(self.g), seed=int(self.seed),
            deficit_split=_core.DeficitSplit(deficit_split_code(split)))


PolicyEntry = Union[str, Mapping[str, Any], WaterfallSpec]


def spec_of_entry(entry: PolicyEntry, i: int, *, executor: Optional[Executor], base: Mapping[str, Any],
                  caller: str) -> tuple[WaterfallSpec, dict[str, Any]]:
    """``policies[i]`` of :func:`deleverage.stress` or :func:`deleverage.compare` as a spec,
    with the liquidate keywords it came from (``base`` under a dict's own keys; a name as
    :meth:`WaterfallSpec.parse` reads it over ``base``). A spec without an executor gets
    ``executor``; a spec with another executor is refused. InvalidInput names ``policies[i]``
    for a bad name or type and for a dict that sets ``executor`` or ``exact``."""
    where = f"policies[{i}]"
    if isinstance(entry, WaterfallSpec):
        if entry.executor is not None and executor is not None and entry.executor != executor:
            raise InvalidInput(f"{where}: the spec's executor {entry.executor!r} is not the executor given to {caller}() "
                               f"({executor!r}); leave the spec's executor None")
        spec = entry if entry.executor is not None else entry.replace(executor=executor)
        return spec, spec.keywords()
    if isinstance(entry, str):
        try:
            spec = WaterfallSpec.parse(entry, executor=executor, **base)
        except InvalidInput as err:
            if not str(err).startswith("unknown "):
                raise
            raise InvalidInput(f"{where}: {err}") from None
        parsed = policy_spec(entry)
        if ":" in entry:  # the mode written in the name wins over base's
            return spec, {**base, **parsed}
        return spec, {**{k: v for k, v in parsed.items() if k == "mode"}, **base, "policy": parsed["policy"]}
    if isinstance(entry, Mapping):
        kw = {**base, **{k: v for k, v in entry.items() if k != "label"}}
        for bad in ("executor", "exact"):
            if bad in kw:
                raise InvalidInput(f"{where}: {bad!r} is not a policy option: it is set by {caller}(), not per policy")
        name = kw.get("policy", "queue")
        if not isinstance(name, str) or name not in LAST_RESORT_POLICIES:
            raise InvalidInput(f"{where}: unknown policy {name!r} (known: {', '.join(LAST_RESORT_POLICIES)})")
        return WaterfallSpec(executor=executor, **kw), kw
    raise InvalidInput(f"{where}: expected a policy name, a dict of liquidate keywords or a WaterfallSpec (got {entry!r})")
