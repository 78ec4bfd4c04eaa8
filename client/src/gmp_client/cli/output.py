"""How results are printed: rich tables for people, JSON (one document on stdout) for scripts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def plain(value: Any) -> Any:
    """The JSON-able form of a client result: dataclasses become dicts, recursively."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):  # gmp_client's models: the API's field names
        return plain(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def when(ts: Any) -> str:
    """A unix timestamp as local ISO time (empty for none)."""
    if ts in (None, "", 0):
        return ""
    try:
        return dt.datetime.fromtimestamp(float(ts)).isoformat(sep=" ", timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts)


def cell(value: Any) -> str:
    """A table cell: lists joined, dicts as compact JSON, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


class Output:
    """Prints to stdout (results) and stderr (progress, warnings, errors)."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.console = Console(soft_wrap=False)
        self.err = Console(stderr=True)

    def json(self, data: Any) -> None:
        """One JSON document on stdout."""
        sys.stdout.write(json.dumps(plain(data), indent=2, default=str) + "\n")
        sys.stdout.flush()

    def result(self, data: Any, text: str | None = None) -> None:
        """`data` as JSON, or `text` (a one-line summary) for people."""
        if self.as_json:
            self.json(data)
        elif text is not None:
            self.console.print(text, highlight=False, markup=False)

    def table(
        self,
        rows: Sequence[dict[str, Any]],
        columns: Iterable[str | tuple[str, str]],
        title: str | None = None,
        data: Any = None,
    ) -> None:
        """Rows as a table (or `data`, else the rows, as JSON). A column is a key or (key, heading)."""
        if self.as_json:
            self.json(rows if data is None else data)
            return
        cols = [(c, c) if isinstance(c, str) else c for c in columns]
        table = Table(title=title, show_lines=False, header_style="bold")
        for _, heading in cols:
            table.add_column(heading, overflow="fold")
        for row in rows:
            table.add_row(*(cell(row.get(key)) for key, _ in cols))
        self.console.print(table)

    def record(self, data: dict[str, Any], title: str | None = None) -> None:
        """One object as a two-column table of its fields."""
        if self.as_json:
            self.json(data)
            return
        table = Table(title=title, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in data.items():
            table.add_row(key, cell(value))
        self.console.print(table)

    def note(self, text: str) -> None:
        """A remark for people on stderr (never mixed into JSON)."""
        self.err.print(text, highlight=False, markup=False)
