"""docs/replay.md's tables are what docs/examples/replay_event.py prints (numbers in docs come
from runs), and its prose quotes only numbers those tables hold."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_replay_tables_are_what_the_script_prints() -> None:
    spec = importlib.util.spec_from_file_location("replay_event", ROOT / "docs" / "examples" / "replay_event.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = (ROOT / "docs" / "replay.md").read_text()
    tables = ""
    for name, body in mod.blocks().items():
        m = re.search(rf"<!-- replay_event:{name}:begin -->\n(.*?)\n<!-- replay_event:{name}:end -->", doc, re.S)
        assert m is not None, f"markers of {name} missing"
        assert m.group(1) == body, f"docs/replay.md's {name} table is not what replay_event.py prints: run it with --update-doc"
        tables += body
    prose = re.sub(r"<!-- replay_event:(\w+):begin -->.*?<!-- replay_event:\1:end -->", "", doc, flags=re.S)
    reading = prose[prose.index("Reading the tables"):]
    for number in re.findall(r"-?\d[\d,]*\.\d+|\b\d{3,}\b", reading):
        assert number in tables, f"docs/replay.md quotes {number}, which its tables do not hold"
