"""A light C++ scanner for the structural rules of issue 15: the classes of a file with the
lines of their bodies, and the functions defined at namespace scope (free functions and
out-of-line members) with their lengths.

It is not a C++ parser: it strips comments and literals, tracks braces, and reads what
precedes each brace at namespace scope. That is enough for this code base's style (no
macros that open scopes, no brace initializers in constructor initializer lists at
namespace scope); the structure tests also check that it finds the definitions they know of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_COMMENT_OR_LITERAL = re.compile(
    r'//[^\n]*|/\*.*?\*/|R"(?P<d>[^(]*)\(.*?\)(?P=d)"|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'',
    re.S,
)
_CLASS_HEAD = re.compile(r"\b(?:class|struct)\s+(?:\[\[[^\]]*\]\]\s*)?(\w+)\s*(?:final\s*)?(?::[^{]*)?$", re.S)
_FUNCTION_NAME = re.compile(r"((?:\w+::)*(?:~?\w+|operator\s*[^\s(]+))\s*\($")


@dataclass(frozen=True)
class Definition:
    kind: str  # "class" or "function"
    name: str  # a class's name; a function's qualified name as written (Engine::trade)
    path: Path
    line: int  # first line (1-based)
    lines: int  # from the line of the head to the closing brace

    @property
    def owner(self) -> str:
        """For an out-of-line member function, its class (the last qualifier)."""
        parts = self.name.split("::")
        return parts[-2] if len(parts) > 1 else ""


def _blank(match: re.Match[str]) -> str:
    # keep newlines so that line numbers stay right
    return re.sub(r"[^\n]", " ", match.group(0))


def _head_name(head: str) -> tuple[str, str] | None:
    """What a brace at namespace scope opens: ("class", name), ("function", name), or None
    (a namespace, an enum, an initializer, an extern block)."""
    head = " ".join(head.split())
    if re.match(r"^(?:inline\s+)?namespace\b", head) or re.match(r"^extern\s", head):
        return None
    if re.search(r"\benum\b", head) or head.endswith("=") or not head:
        return None
    if "(" not in head:
        m = _CLASS_HEAD.search(head)
        return ("class", m.group(1)) if m else None
    # a function: the name before the parameter list (the first "(" at template depth 0)
    depth = 0
    for i, ch in enumerate(head):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "(" and depth == 0:
            m = _FUNCTION_NAME.search(head[: i + 1])
            return ("function", m.group(1).replace(" ", "")) if m else None
    return None


def definitions(path: Path) -> list[Definition]:
    text = _COMMENT_OR_LITERAL.sub(_blank, path.read_text())
    text = re.sub(r"^\s*#[^\n]*", _blank, text, flags=re.M)  # preprocessor lines
    out: list[Definition] = []
    scopes: list[tuple[str, str | None, int]] = []  # the namespaces open here
    head_start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in ";}" and all(kind == "namespace" for kind, _, _ in scopes):
            if ch == "}" and scopes:
                scopes.pop()
            head_start = i + 1
        elif ch == "{":
            at_namespace_scope = all(kind == "namespace" for kind, _, _ in scopes)
            what = _head_name(text[head_start:i]) if at_namespace_scope else None
            if what is None and at_namespace_scope:
                # a namespace stays transparent; anything else (an enum, an initializer) is skipped whole
                if re.search(r"\bnamespace\b|\bextern\b", text[head_start:i]):
                    scopes.append(("namespace", None, i))
                    head_start = i + 1
                    i += 1
                    continue
                what = ("other", "")
            if what is not None:
                # find the matching brace
                depth, j = 1, i + 1
                while depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                kind, name = what
                if kind != "other":
                    first = text.count("\n", 0, head_start + len(text[head_start:i]) - len(text[head_start:i].lstrip()))
                    last = text.count("\n", 0, j - 1)
                    out.append(Definition(kind, name, path, first + 1, last - first + 1))
                i = j
                # a class definition ends with ";", a function with "}": either way the next head starts here
                head_start = i
                continue
        i += 1
    return out
