"""Prometheus exposition of the persisted counters (`/metrics`), on a registry of its own.

Every value comes from what the other functions persisted (StateTable, the dead-letter queue): a
Lambda container's memory holds nothing worth exposing. One scrape costs four DynamoDB queries, two
GetItems and one SQS GetQueueAttributes, whatever the traffic; nothing scans a table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailproxy.crypto import tokens_equal
from mailproxy.domain import BounceCounter, Counter
from mailproxy.settings import get_settings, local_metrics_token
from mailproxy.stores import stores

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_FIELD = "bounce_reports_unmatched"  # the tenant counter mailproxy.bounces adds to
LABELS = ["tenant_id", "account_id"]
# (family name without _total, StateTable field, HELP text): the four series of API.md "Counters".
COUNTERS = (
    ("gmp_sent", Counter.SENT, "Messages sent, per tenant and account."),
    ("gmp_errors", Counter.ERRORS, "Messages that failed after acceptance, per tenant and account."),
    ("gmp_deferred", Counter.DEFERRED, "Deferrals (temporary failure or rate limit), per tenant and account."),
    ("gmp_rate_limited", Counter.RATE_LIMITED, "Rate-limit hits (deferred or rejected), per tenant and account."),
    (
        "gmp_suppressed",
        Counter.SUPPRESSED,
        "Recipients dropped at send because the tenant's suppression list holds them, per tenant and account.",
    ),
)
BOUNCES = "gmp_bounces"  # {tenant_id, account_id, type}: hard or soft (docs/bounces.md)
COMPLAINTS = "gmp_complaints"
UNMATCHED_REPORTS = "gmp_bounce_reports_unmatched"
ACCOUNT_PAUSED = "gmp_account_paused"
PENDING = "gmp_pending_messages"
TENANT_PENDING = "gmp_tenant_pending_messages"
DEAD_LETTER = "gmp_dead_letter_messages"
SCHEDULER_LAST_RUN = "gmp_scheduler_last_run_timestamp_seconds"
QUOTA_REJECTED = "gmp_quota_rejected"
LARGE_FILE_DOWNLOADS = "gmp_large_file_downloads"
COMMAND_LOG_WRITE_FAILURES = "gmp_command_log_write_failures"
REPORT_FAILURES = "gmp_report_failures"
REPORT_LAST_SUCCESS = "gmp_report_last_success_timestamp_seconds"


def _logger() -> Any:
    from mailproxy.logs import logger

    return logger()


class PersistedCollector(Collector):
    """Reads the counters and pending counts from StateTable at each scrape."""

    def collect(self) -> Iterator[Metric]:
        """The gmp_* families with their current values."""
        # A failed read raises: a scrape error (Prometheus `up` = 0) is honest, zeros would look like a reset.
        rows = stores().counters.counter_rows()
        for name, field, text in COUNTERS:
            family = CounterMetricFamily(name, text, labels=LABELS)
            for row in rows:
                family.add_metric([row["tenant_id"], row["account_id"]], float(row.get(field, 0)))
            yield family
        paused = GaugeMetricFamily(
            ACCOUNT_PAUSED,
            "1 while the reputation guard holds the account's messages (bounce or complaint rate over its limit).",
            labels=LABELS,
        )
        for row in rows:
            paused.add_metric([row["tenant_id"], row["account_id"]], float(row.get("paused", 0) or 0))
        yield paused

        yield from bounce_families(rows)

        pending = stores().counters.pending_counts()
        yield GaugeMetricFamily(
            PENDING,
            "Accepted messages not yet sent, failed or deleted (scheduled and suspended ones included).",
            value=float(sum(pending.values())),
        )
        by_tenant = GaugeMetricFamily(
            TENANT_PENDING, "gmp_pending_messages broken down by tenant.", labels=["tenant_id"]
        )
        for tenant_id, count in sorted(pending.items()):
            by_tenant.add_metric([tenant_id], float(count))
        yield by_tenant

        last_run = stores().service.scheduler_last_run()
        if last_run is not None:
            yield GaugeMetricFamily(
                SCHEDULER_LAST_RUN,
                "Unix time the scheduler last completed a round (deferred and parked messages wait on it).",
                value=float(last_run),
            )

        quota_rejected = CounterMetricFamily(
            QUOTA_REJECTED,
            "Messages rejected at intake because the tenant's quota (rate_limits) was used up, per tenant.",
            labels=["tenant_id"],
        )
        downloads = CounterMetricFamily(
            LARGE_FILE_DOWNLOADS,
            "Downloads through the links of rewritten large attachments (docs/large-files.md), per tenant.",
            labels=["tenant_id"],
        )
        tenant_rows = stores().counters.tenant_counter_rows()
        for tenant_id, row in sorted(tenant_rows.items()):
            quota_rejected.add_metric([tenant_id], float(row.get("quota_rejected", 0)))
            downloads.add_metric([tenant_id], float(row.get("large_file_downloads", 0)))
        yield quota_rejected
        yield downloads

        unmatched = CounterMetricFamily(
            UNMATCHED_REPORTS,
            "Bounces and complaints read from a tenant's bounce mailbox that named none of its messages, or someone its "
            "message was not sent to (one per report), per tenant.",
            labels=["tenant_id"],
        )
        # Every tenant with an account shows the series (at zero until a report goes unmatched), as accounts do.
        for tenant_id in sorted({str(r["tenant_id"]) for r in rows} | set(tenant_rows)):
            unmatched.add_metric([tenant_id], float(tenant_rows.get(tenant_id, {}).get(UNMATCHED_FIELD, 0)))
        yield unmatched

        yield CounterMetricFamily(
            COMMAND_LOG_WRITE_FAILURES,
            "Mutating API calls whose command-log entry could not be stored (each is in IntakeFunction's log).",
            value=float(stores().counters.service_counters().get("command_log_write_failures", 0)),
        )

        yield from report_families()

        depth = stores().queue.dead_letter_depth()
        if depth is not None:
            yield GaugeMetricFamily(
                DEAD_LETTER,
                "Queue messages in the dead-letter queue (poison messages; each needs an operator).",
                value=float(depth),
            )


def bounce_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    """Bounces (hard, soft) and complaints recorded on each account's messages (docs/bounces.md)."""
    bounced = CounterMetricFamily(
        BOUNCES,
        "Bounces recorded on sent messages, per tenant, account and type (hard: the address is gone; soft: passing).",
        labels=[*LABELS, "type"],
    )
    complaints = CounterMetricFamily(
        COMPLAINTS, "Complaints (ARF abuse reports) recorded on sent messages, per tenant and account.", labels=LABELS
    )
    for row in rows:
        labels = [row["tenant_id"], row["account_id"]]
        bounced.add_metric([*labels, "hard"], float(row.get(BounceCounter.BOUNCES_HARD, 0)))
        bounced.add_metric([*labels, "soft"], float(row.get(BounceCounter.BOUNCES_SOFT, 0)))
        complaints.add_metric(labels, float(row.get(BounceCounter.COMPLAINTS, 0)))
    yield bounced
    yield complaints


def report_families() -> Iterator[Metric]:
    """The reporter's per-tenant state (one query of its SYNC items): failing callbacks, last acknowledgement."""
    failures = GaugeMetricFamily(
        REPORT_FAILURES,
        "Consecutive failed delivery-report calls to the tenant's callback (0 once one is acknowledged).",
        labels=["tenant_id"],
    )
    last_success = GaugeMetricFamily(
        REPORT_LAST_SUCCESS, "Unix time the tenant's callback last acknowledged a report.", labels=["tenant_id"]
    )
    for tenant_id, sync in sorted(stores().outbox.sync_states().items()):
        failures.add_metric([tenant_id], float(sync.get("failures") or 0))
        if sync.get("last_sync_ts") is not None:
            last_success.add_metric([tenant_id], float(sync["last_sync_ts"]))
    yield failures
    yield last_success


def render() -> bytes:
    """The Prometheus text of the current persisted state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PersistedCollector())
    return generate_latest(registry)


def expected_token() -> str | None:
    """The bearer token /metrics requires: METRICS_TOKEN (locally), else the METRICS_TOKEN_SECRET_ARN secret
    (AWS, read on a /metrics request only and cached at most GMP_SECRET_MAX_AGE_SECONDS); None: open."""
    # Read at each request, as before settings are cached: a local stack's METRICS_TOKEN may change while it runs.
    local_token = local_metrics_token()
    if local_token:
        return local_token
    settings = get_settings()
    if settings.metrics_token_secret_arn:
        from mailproxy.secret_cache import secrets

        return secrets.get(settings.metrics_token_secret_arn, max_age=settings.secret_max_age_seconds)
    return None


def authorized(event: dict[str, Any]) -> bool:
    """True unless a token is required (expected_token) and the request lacks `Authorization: Bearer <it>`."""
    expected = expected_token()
    if expected is None:
        return True
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    scheme, _, given = str(headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and tokens_equal(given.strip(), expected)


def render_response(event: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway response of `GET /metrics` (bearer token required when one is configured)."""
    if not authorized(event):
        return {
            "statusCode": 401,
            "headers": {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"},
            "body": '{"detail": "Invalid or missing bearer token"}',
            "isBase64Encoded": False,
        }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": CONTENT_TYPE},
        "body": render().decode("utf-8"),
        "isBase64Encoded": False,
    }
