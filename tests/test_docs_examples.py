"""Every ```python block of README.md and docs/*.md runs as written.

The blocks of one file run in order in one namespace (a reader types them one after the
other into one session), in a temporary working directory (they write files). A block that
raises fails the test with the file, the block's first line number and the error. Some
blocks' results are then checked against what the prose around them says they show.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, source) of every ```python block of a markdown file."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def run_blocks(path: Path) -> dict[str, Any]:
    """Execute the file's python blocks in order in one namespace; return the namespace."""
    import matplotlib

    matplotlib.use("Agg")  # the blocks plot; no display here
    namespace: dict[str, Any] = {"__name__": f"docs:{path.name}"}
    for line, source in python_blocks(path):
        code = compile(source, f"{path.relative_to(ROOT)}:{line}", "exec")
        try:
            exec(code, namespace)
        except Exception as err:  # the failing block, named as a reader would find it
            raise AssertionError(f"{path.relative_to(ROOT)}, block at line {line} raised "
                                 f"{type(err).__name__}: {err}") from err
    return namespace


def test_every_doc_with_python_has_a_test() -> None:
    with_blocks = {p.name for p in DOCS if python_blocks(p)}
    assert with_blocks <= {p.name for p in DOCS}
    assert "README.md" in with_blocks  # the extraction itself works


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run_as_written(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ns = run_blocks(path)
    if path.name == "README.md":
        _check_readme(ns)


def _check_readme(ns: dict[str, Any]) -> None:
    # The waterfall block sets out to show the fund paying before ADL: BTC-PERP's own pool
    # (50, drawdown limit 30%) pays what the rule allows of account 1's deficit, and only the
    # rest goes to ADL against account 2's short; nothing is left as bad debt.
    t = ns["result"].totals
    assert t.liquidated_accounts == 1
    assert 0 < t.fund_used <= 0.3 * 50.0, t
    assert t.adl_closes >= 1 and t.bad_debt == 0, t
    assert t.fund_used + t.last_resort_needed <= t.deficit + 1e-9, t
    ledger = ns["ex"].insurance.ledger()
    paid = ledger.amount[ledger.reason == "deficit_payment"]
    assert len(paid) >= 1 and set(ledger.pool[ledger.reason == "deficit_payment"]) == {ns["ex"].insurance.pool_of("BTC-PERP")}
    ns["ex"].check_invariants()
    # the error the README quotes is the one a reader gets
    quoted = re.search(r"\(`(prices\[0\] \(market 'BTC-PERP'\): a mark price\s+must be positive \(got -5.0\))`",
                       (ROOT / "README.md").read_text())
    assert quoted is not None
    with pytest.raises(ns["deleverage"].errors.InvalidInput) as info:
        ns["ex"].set_marks(["BTC-PERP"], [-5.0])
    assert str(info.value) == " ".join(quoted.group(1).split())
