"""The service's `/metrics` text, read into the figures `gmp status` and `gmp top` show.

prometheus_client's own parser reads the text when it is installed (it is, with the `cli` extra); otherwise a
minimal parser reads the lines this service writes: `name{label="value",...} number`, comments skipped, label
values with `\\"`, `\\\\` and `\\n` escapes. Timestamps and exemplars, which the service never writes, are ignored.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

Sample = tuple[str, dict[str, str], float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_minimal(text: str) -> list[Sample]:
    """Every sample of an exposition text, without prometheus_client."""
    samples: list[Sample] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        name, labels_text, number = match.groups()
        labels = {k: _unescape(v) for k, v in _LABEL.findall(labels_text or "")}
        try:
            samples.append((name, labels, float(number)))
        except ValueError:
            continue
    return samples


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition text (prometheus_client's parser when installed)."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return parse_minimal(text)
    return [(s.name, dict(s.labels), float(s.value)) for f in text_string_to_metric_families(text) for s in f.samples]


@dataclass
class Snapshot:
    """The figures of one scrape."""

    pending: float | None = None
    dead_letters: float | None = None
    scheduler_last_run: float | None = None
    # (tenant_id, account_id) -> {"sent": n, "errors": n, "deferred": n, "rate_limited": n}
    accounts: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    # tenant_id -> {"pending": n, "report_failures": n, "report_last_success": ts}
    tenants: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of `gmp status --json`'s `metrics`."""
        return {
            "pending_messages": self.pending,
            "dead_letter_messages": self.dead_letters,
            "scheduler_last_run_ts": self.scheduler_last_run,
            "accounts": [{"tenant_id": t, "account_id": a, **v} for (t, a), v in sorted(self.accounts.items())],
            "tenants": [{"tenant_id": t, **v} for t, v in sorted(self.tenants.items())],
        }


_ACCOUNT_COUNTERS = {
    "gmp_sent_total": "sent",
    "gmp_errors_total": "errors",
    "gmp_deferred_total": "deferred",
    "gmp_rate_limited_total": "rate_limited",
}
_TENANT_GAUGES = {
    "gmp_tenant_pending_messages": "pending",
    "gmp_report_failures": "report_failures",
    "gmp_report_last_success_timestamp_seconds": "report_last_success",
}


def snapshot(text: str) -> Snapshot:
    """The figures `gmp status` shows, from a `/metrics` text."""
    snap = Snapshot()
    accounts: dict[tuple[str, str], dict[str, float]] = defaultdict(
        lambda: {"sent": 0.0, "errors": 0.0, "deferred": 0.0, "rate_limited": 0.0}
    )
    tenants: dict[str, dict[str, float]] = defaultdict(dict)
    for name, labels, value in parse(text):
        if name in _ACCOUNT_COUNTERS:
            key = (labels.get("tenant_id", ""), labels.get("account_id", ""))
            accounts[key][_ACCOUNT_COUNTERS[name]] += value
        elif name in _TENANT_GAUGES:
            tenants[labels.get("tenant_id", "")][_TENANT_GAUGES[name]] = value
        elif name == "gmp_pending_messages":
            snap.pending = value
        elif name == "gmp_dead_letter_messages":
            snap.dead_letters = value
        elif name == "gmp_scheduler_last_run_timestamp_seconds":
            snap.scheduler_last_run = value
    snap.accounts = dict(accounts)
    snap.tenants = dict(tenants)
    return snap


def rates(before: Snapshot, after: Snapshot, seconds: float) -> dict[tuple[str, str], float]:
    """Messages sent per second per (tenant, account) between two scrapes (0 after a counter reset)."""
    if seconds <= 0:
        return {}
    return {
        key: max(0.0, figures["sent"] - before.accounts.get(key, {}).get("sent", 0.0)) / seconds
        for key, figures in after.accounts.items()
    }
