"""Structural rules (issue 15): no Python function over 100 lines; no C++ function over 120
lines, no C++ class body over 400 lines nor class over 500 lines with its member functions
(the Engine facade aside), no friends in engine.hpp."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cpp_structure import Definition, definitions

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "deleverage"
MAX_LINES = 100
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def test_no_python_function_is_over_100_lines() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
    assert any(PACKAGE.rglob("books/*.py"))  # the walk sees the subpackages


# ---------------------------------------------------------------- C++ (tests/cpp_structure.py)

CPP = Path(__file__).resolve().parents[1] / "cpp"
MAX_FUNCTION_LINES = 120
MAX_CLASS_BODY_LINES = 400
MAX_CLASS_LINES = 500  # the body and its out-of-line member functions
FACADE = "Engine"  # the embedding API: exempt from the class targets (issue 15)


def cpp_definitions() -> list[Definition]:
    files = sorted(p for d in ("src", "include", "bindings") for p in (CPP / d).rglob("*.[ch]pp"))
    found = [d for p in files for d in definitions(p)]
    names = {d.name for d in found}
    # the scanner sees what it must: a guard against a scanner that silently finds nothing
    assert {"Engine", "WaterfallRun", "Engine::liquidate", "WaterfallRun::run_rounds", "allocate"} <= names
    assert len(found) > 400
    return found


def test_no_cpp_function_is_over_120_lines() -> None:
    long = [f"{d.path.relative_to(CPP)}:{d.line} {d.name} ({d.lines} lines)"
            for d in cpp_definitions() if d.kind == "function" and d.lines > MAX_FUNCTION_LINES]
    assert not long, long


def test_no_cpp_class_is_over_its_size_targets() -> None:
    found = cpp_definitions()
    members: dict[str, int] = {}
    for d in found:
        if d.kind == "function" and d.owner:
            members[d.owner] = members.get(d.owner, 0) + d.lines
    too_big = []
    for d in found:
        if d.kind != "class" or d.name == FACADE:
            continue
        total = d.lines + members.get(d.name, 0)
        if d.lines > MAX_CLASS_BODY_LINES or total > MAX_CLASS_LINES:
            too_big.append(f"{d.path.relative_to(CPP)}:{d.line} {d.name} (body {d.lines}, with members {total})")
    assert not too_big, too_big


def test_engine_header_declares_no_friend_classes() -> None:
    """Friend functions (a defaulted comparison) are fine; a friend class reaches into the
    engine's privates."""
    engine = _COMMENT.sub("", (CPP / "include" / "deleverage" / "engine.hpp").read_text())
    friends = re.findall(r"\bfriend\b[^;{]*", engine)
    assert friends, "the scan sees the friend comparison of StateHash"
    assert [f for f in friends if "(" not in f] == []
