"""The package is typed (py.typed, _core.pyi): mypy must accept it, stubs included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_type_checks() -> None:
    ran = subprocess.run([sys.executable, "-m", "mypy", str(ROOT / "python" / "deleverage"), "--ignore-missing-imports"],
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "Success" in ran.stdout


def test_stubs_cover_every_engine_method() -> None:
    from deleverage import _core

    stub = (ROOT / "python" / "deleverage" / "_core.pyi").read_text()
    public = [name for name in dir(_core.Engine) if not name.startswith("_")]
    missing = [name for name in public if f"def {name}(" not in stub]
    assert missing == []
