"""Prometheus exposition of the persisted counters (`/metrics`), on a registry of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailproxy import state
from mailproxy.crypto import tokens_equal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COUNTERS = (
    ("gmp_sent", "sent", "Messages sent, per tenant and account."),
    ("gmp_errors", "errors", "Messages that failed after acceptance, per tenant and account."),
    ("gmp_deferred", "deferred", "Deferrals (temporary failure or rate limit), per tenant and account."),
    ("gmp_rate_limited", "rate_limited", "Rate-limit hits (deferred or rejected), per tenant and account."),
)


class PersistedCollector(Collector):
    """Reads the counters and pending counts from StateTable at each scrape."""

    def collect(self) -> Iterator[Metric]:
        """The gmp_* families with their current values."""
        rows = state.counter_rows()
        for name, field, text in COUNTERS:
            family = CounterMetricFamily(name, text, labels=["tenant_id", "account_id"])
            for row in rows:
                family.add_metric([row["tenant_id"], row["account_id"]], float(row.get(field, 0)))
            yield family
        total = sum(state.pending_counts().values())
        yield GaugeMetricFamily(
            "gmp_pending_messages", "Accepted messages not yet sent, failed or deleted.", value=float(total)
        )


def render() -> bytes:
    """The Prometheus text of the current persisted state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PersistedCollector())
    return generate_latest(registry)


def render_response(event: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway response of `GET /metrics` (bearer token required when METRICS_TOKEN is set)."""
    expected = os.environ.get("METRICS_TOKEN", "")
    if expected:
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        given = str(headers.get("authorization", ""))
        if not given.startswith("Bearer ") or not tokens_equal(given[7:], expected):
            return {
                "statusCode": 401,
                "headers": {"Content-Type": "application/json"},
                "body": '{"detail": "Unauthorized"}',
            }
    return {"statusCode": 200, "headers": {"Content-Type": CONTENT_TYPE}, "body": render().decode("utf-8")}
