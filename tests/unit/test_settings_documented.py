"""Every setting the package reads and every template parameter is documented, under its own name, with its default."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
READERS = {"_int", "_float", "_positive", "_int_list", "get"}


def _settings_read() -> dict[str, Any]:
    """GMP_* name → its default, as `mailproxy/settings.py` reads it."""
    tree = ast.parse((ROOT / "layers" / "common" / "mailproxy" / "settings.py").read_text())
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        first = node.args[0]
        if name in READERS and isinstance(first, ast.Constant) and str(first.value).startswith("GMP_"):
            default = node.args[1] if len(node.args) > 1 else None
            # Defaults are literals or products of literals (35 * 1024 * 1024): evaluated without names.
            value = compile(ast.Expression(default), "settings", "eval") if default else None
            found[first.value] = eval(value, {"__builtins__": {}}) if value else None
    return found


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Za-z0-9_]+)`", cells[0]) if line.startswith("|") else None
        if match:
            rows[match.group(1)] = cells[1:]
    return rows


def _shown(default: Any) -> str:
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def test_the_readme_lists_every_setting_with_its_default() -> None:
    rows = _table_rows((ROOT / "README.md").read_text())
    read = _settings_read()
    assert "GMP_MAX_RECIPIENTS" in read and "GMP_SMTP_VERIFY_TLS" in read  # the parse above finds them
    missing = sorted(name for name in read if name not in rows)
    assert missing == [], f"settings read in mailproxy/settings.py but not in README's configuration table: {missing}"
    wrong = {
        name: (rows[name][0], _shown(default))
        for name, default in read.items()
        if default not in (None, "") and _shown(default) not in rows[name][0]
    }
    assert wrong == {}, f"README default differs from settings.py (README, code): {wrong}"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_deploy_md_lists_every_template_parameter_with_its_default() -> None:
    template = yaml.load(
        (ROOT / "template.yaml").read_text(), Loader=_Loader
    )  # a SafeLoader that ignores !Ref and the like
    rows = _table_rows((ROOT / "docs" / "deploy.md").read_text())
    missing = sorted(name for name in template["Parameters"] if name not in rows)
    assert missing == [], f"template parameters missing from docs/deploy.md's table: {missing}"
    wrong = {
        name: (rows[name][0], str(spec["Default"]))
        for name, spec in template["Parameters"].items()
        if str(spec.get("Default", "")) and f"`{spec['Default']}`" != rows[name][0]
    }
    assert wrong == {}, f"docs/deploy.md default differs from template.yaml (doc, template): {wrong}"
