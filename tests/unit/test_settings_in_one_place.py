"""The environment is read in one module: a setting cannot be read two ways in two places."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "common" / "mailproxy"


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = sorted(
        path.name
        for path in PACKAGE.glob("*.py")
        if path.name != "settings.py" and re.search(r"\bos\.(environ|getenv)\b|\bgetenv\(", path.read_text())
    )
    assert readers == []
