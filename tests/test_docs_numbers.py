"""Numbers in the docs come from runs.

docs/policy_lab.md's tables are printed by docs/examples/compare_policies.py (between
``<!-- compare_policies:MODE:begin/end -->`` markers). The prose that reads them may quote
only numbers those tables hold (rounded as the prose writes them), and the README's policy
table is an extract of the close-mode table. Every row of the README's performance table
names the command that printed it, and the stress command it quotes runs the policies the
row says.
"""

from __future__ import annotations

import math
import re
import shlex
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
POLICY_LAB = (ROOT / "docs" / "policy_lab.md").read_text()

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def _markdown_table(text: str) -> list[dict[str, str]]:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def generated_table(mode: str) -> list[dict[str, str]]:
    m = re.search(rf"<!-- compare_policies:{mode}:begin -->(.*?)<!-- compare_policies:{mode}:end -->", POLICY_LAB, re.S)
    assert m is not None, f"docs/policy_lab.md has no generated {mode} table"
    return _markdown_table(m.group(1))


def _value(token: str) -> float:
    return float(token.replace(",", "").rstrip("%"))


def _decimals(token: str) -> int:
    return len(token.split(".")[1]) if "." in token else 0


def _held(token: str, cells: list[str]) -> bool:
    """Whether a table cell, rounded as the token is written, equals the token."""
    v, d = _value(token), _decimals(token)
    for cell in cells:
        try:
            finite = math.isfinite(_value(cell))
        except ValueError:
            continue
        if not finite:
            continue
        if Decimal(cell.replace(",", "").rstrip("%")).quantize(Decimal(1).scaleb(-d), ROUND_HALF_UP) == Decimal(str(v)):
            return True
    return False


def test_policy_lab_prose_quotes_only_numbers_of_its_generated_tables() -> None:
    rows = generated_table("close") + generated_table("haircut")
    cells = [cell for row in rows for cell in row.values()]
    labels = " ".join(row["policy"] for row in rows)
    prose = POLICY_LAB[POLICY_LAB.index("### Reading the result"):]
    prose = re.sub(r"`[^`]*`", "", prose)  # code spans name things (columns, calls), they quote no result
    quoted = _NUMBER.findall(prose)
    assert quoted, "the reading quotes no number: then this test checks nothing"
    stray = [t for t in quoted if not _held(t, cells) and t not in labels]
    assert stray == [], f"numbers in docs/policy_lab.md's reading that its tables do not hold: {stray}"


def test_readme_policy_table_is_an_extract_of_the_generated_one() -> None:
    section = README[README.index("## The policy lab"):README.index("## Stress testing")]
    readme_rows = _markdown_table(section[section.index("| policy |"):])
    generated = {row["policy"]: row for row in generated_table("close")}
    columns = {"winners touched": "touched", "largest fraction taken": "max fraction", "Gini (touched)": "Gini touched",
               "taken from winners": "taken", "top winner's profit left": "top profit after"}
    assert len(readme_rows) >= 3
    for row in readme_rows:
        assert row["policy"] in generated, f"README row {row['policy']!r} is not in docs/policy_lab.md's close table"
        for readme_col, doc_col in columns.items():
            token = row[readme_col]
            assert _held(token, [generated[row["policy"]][doc_col]]), \
                f"README {row['policy']} / {readme_col}: {token} but the generated table has {generated[row['policy']][doc_col]}"
    # the prose under it quotes no number of its own
    prose = section[section.index("| policy |"):]
    prose = "\n".join(ln for ln in prose.splitlines() if not ln.startswith("|") and not ln.startswith("```"))
    prose = re.sub(r"`[^`]*`", "", prose.split("```python")[0])
    assert _NUMBER.findall(prose) == []


def test_readme_performance_rows_name_their_command() -> None:
    section = README[README.index("## Performance"):README.index("## Embedding the C++ core")]
    rows = _markdown_table(section[section.index("| what |"):])
    assert len(rows) >= 5
    for row in rows:
        command = row["command (what it runs)"]
        if command.startswith("the same run"):  # the row above's command printed this one too
            continue
        assert re.search(r"`(python |build/|deleverage |pytest )", command), f"{row['what']}: no command in {command!r}"


def test_readme_stress_row_runs_the_policies_it_names() -> None:
    from deleverage.cli import _build_parser

    section = README[README.index("## Performance"):README.index("## Embedding the C++ core")]
    row = next(r for r in _markdown_table(section[section.index("| what |"):]) if "deleverage stress" in r["command (what it runs)"])
    command = re.search(r"`(deleverage stress [^`]*)`", row["command (what it runs)"])
    assert command is not None
    args = _build_parser().parse_args(shlex.split(command.group(1))[1:])
    said = re.search(r"the (\d+) default policies ([\w, ]+?) and (\w+),", row["command (what it runs)"])
    assert said is not None, row
    named = [p.strip() for p in said.group(2).split(",")] + [said.group(3)]
    assert int(said.group(1)) == len(args.policies) and named == args.policies
    assert f"{args.paths} paths x {args.steps} steps" in row["command (what it runs)"]
    assert args.shock is None and "no shock" in row["command (what it runs)"]


def test_policy_lab_tables_are_what_their_script_prints() -> None:
    """The page's tables are the script's output for the engine as it is now: a change that
    moves a number needs `python docs/examples/compare_policies.py --update-doc` (and the
    README extract and the reading above re-checked)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_policies", ROOT / "docs" / "examples" / "compare_policies.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for mode, specs in (("close", script.CLOSE), ("haircut", script.HAIRCUT)):
        table, skipped = script.compare_mode(mode, specs)
        printed = _markdown_table(script.block(mode, table, skipped))
        assert printed == generated_table(mode), (
            f"docs/policy_lab.md's {mode} table is not what docs/examples/compare_policies.py prints now: run it with "
            "--update-doc")
