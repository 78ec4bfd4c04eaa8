"""docs/security.md names a test for every control: each name must be a test that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`((?:unit|integration|e2e)/[\w/]+\.py)::(\w+)`")


def _references() -> list[tuple[str, str]]:
    return REFERENCE.findall((ROOT / "docs" / "security.md").read_text(encoding="utf-8"))


def test_the_threat_model_names_tests_for_every_area() -> None:
    files = {path for path, _ in _references()}
    assert len(_references()) >= 60
    assert {"integration/test_outbound_guard.py", "integration/test_tenant_files.py"} <= files


def test_every_test_the_threat_model_names_exists() -> None:
    missing = []
    for path, name in _references():
        source = ROOT / "tests" / path
        if not source.is_file() or not re.search(rf"^(async )?def {name}\(", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
