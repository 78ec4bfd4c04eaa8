"""`GET /metrics` and `GET /health` (MetricsFunction) as API.md and DESIGN.md "Observability" describe them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Storage
from tests.integration.delivery import Delivery, message, senders_racing
from tests.integration.prometheus_support import binary
from tests.integration.smtp_servers import RunningServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.both_storages
CORE_SERIES = {
    "gmp_sent_total": "counter",
    "gmp_errors_total": "counter",
    "gmp_deferred_total": "counter",
    "gmp_rate_limited_total": "counter",
    "gmp_pending_messages": "gauge",
}


def metrics_event(**headers: str) -> dict[str, Any]:
    """The API Gateway REST proxy event of `GET /metrics`."""
    return {
        "resource": "/metrics",
        "path": "/metrics",
        "httpMethod": "GET",
        "headers": dict(headers) or None,
        "queryStringParameters": None,
        "body": None,
        "isBase64Encoded": False,
    }


def scrape(**headers: str) -> dict[str, Any]:
    """One invocation of the MetricsFunction handler, as Lambda makes it."""
    from functions.metrics.app import handler

    response: dict[str, Any] = handler(metrics_event(**headers), None)
    return response


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) → value, from Prometheus text."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def account_values(text: str, tenant_id: str, account_id: str) -> dict[str, float]:
    """The four counters of one account (absent ones as 0)."""
    found = samples(text)
    labels = (("account_id", account_id), ("tenant_id", tenant_id))
    return {name: found.get((name, labels), 0.0) for name in list(CORE_SERIES)[:4]}


@pytest.fixture
def delivery(storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer) -> Delivery:
    """Tenant acme with account smtp (no limit) and account limited (3 a minute), both on the loopback server."""
    reply = api.post("/tenant", json={"id": "acme", "name": "Acme"}, headers=admin)
    assert reply.status_code == 200, reply.text
    key = {"X-API-Token": reply.json()["api_key"]}
    for body in (
        {"id": "smtp", "host": "127.0.0.1", "port": server.port, "use_tls": False},
        {"id": "limited", "host": "127.0.0.1", "port": server.port, "use_tls": False, "limit_per_minute": 3},
    ):
        assert api.post("/account", json=body, headers=key).status_code == 200
    return Delivery(storage, api, admin, "acme", key)


def mixed_traffic(delivery: Delivery) -> None:
    """3 sent, 1 failed 550, 1 deferred 451 on smtp; 3 sent and 2 rate-limited on limited."""
    delivery.submit(
        message("ok-1"),
        message("ok-2"),
        message("ok-3"),
        message("bad-1", to="reject550@example.test"),
        message("later-1", to="temp451@example.test"),
        *(message(f"lim-{n}", account_id="limited") for n in range(5)),
    )
    delivery.pump()


def test_metrics_page_has_exactly_the_five_series_with_help_type_and_the_persisted_values(delivery: Delivery) -> None:
    mixed_traffic(delivery)
    response = scrape()

    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response["body"]
    for name, kind in CORE_SERIES.items():
        assert re.search(rf"^# HELP {name} \S", text, re.M), name
        assert f"# TYPE {name} {kind}\n" in text
    assert account_values(text, "acme", "smtp") == {
        "gmp_sent_total": 3,
        "gmp_errors_total": 1,
        "gmp_deferred_total": 1,
        "gmp_rate_limited_total": 0,
    }
    assert account_values(text, "acme", "limited") == {
        "gmp_sent_total": 3,
        "gmp_errors_total": 0,
        "gmp_deferred_total": 2,
        "gmp_rate_limited_total": 2,
    }
    # Pending: the 451 message and the two rate-limited ones, as /status counts them; one gauge, no labels.
    assert re.search(r"^gmp_pending_messages 3\.0$", text, re.M)
    assert delivery.pending() == 3
    assert re.search(r'^gmp_tenant_pending_messages\{tenant_id="acme"\} 3\.0$', text, re.M)
    assert delivery.counters("smtp") == {"sent": 3, "errors": 1, "deferred": 1, "rate_limited": 0}


def test_a_rate_limit_rejection_counts_as_rate_limited_not_as_an_error(
    delivery: Delivery, server: RunningServer
) -> None:
    body = {"id": "strict", "host": "127.0.0.1", "port": server.port, "use_tls": False, "limit_per_minute": 1}
    body["limit_behavior"] = "reject"
    assert delivery.api.post("/account", json=body, headers=delivery.key).status_code == 200
    delivery.submit(*(message(f"s-{n}", account_id="strict") for n in range(3)))
    delivery.pump()

    errors = [r["error"] for r in delivery.records().values() if r["status"] == "error"]
    values = account_values(scrape()["body"], "acme", "strict")
    # A minute window may roll over mid-test and let a second one through.
    assert errors and set(errors) == {"rate_limit_exceeded"}
    assert values == {
        "gmp_sent_total": 3 - len(errors),
        "gmp_errors_total": 0,
        "gmp_deferred_total": 0,
        "gmp_rate_limited_total": len(errors),
    }


def test_pending_gauge_follows_acceptance_sending_and_deletion(delivery: Delivery) -> None:
    def pending() -> float:
        return samples(scrape()["body"])[("gmp_pending_messages", ())]

    assert pending() == 0
    delivery.submit(message("m-1"), message("m-2"), message("m-3", deferred_ts=2_000_000_000))
    assert pending() == 3
    reply = delivery.api.post("/commands/delete-messages", json={"ids": ["m-3"]}, headers=delivery.key)
    assert reply.status_code == 200, reply.text
    assert pending() == 2
    delivery.pump()
    assert pending() == 0


def test_promtool_accepts_the_real_metrics_output(delivery: Delivery, tmp_path: Path) -> None:
    promtool = binary("promtool")
    mixed_traffic(delivery)
    delivery.scheduler()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=scrape()["body"], capture_output=True, text=True, timeout=30
    )
    # promtool exits 0 when the text parses; it prints lint advice only for real problems.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_dead_letter_depth_and_scheduler_last_run_are_exposed(delivery: Delivery) -> None:
    for n in range(2):
        delivery.runner.dead_letter(f"poison {n}")
    delivery.scheduler()

    found = samples(scrape()["body"])
    assert found[("gmp_dead_letter_messages", ())] == 2
    assert found[("gmp_scheduler_last_run_timestamp_seconds", ())] > 1_700_000_000


@pytest.mark.aws_only("writes the reporter's sync state as StateTable items")
def test_a_failing_report_callback_shows_per_tenant(delivery: Delivery) -> None:
    ddb = delivery.env.client("dynamodb")
    for tenant_id, fields in (("acme", {"failures": 4}), ("globex", {"failures": 0, "last_sync_ts": 1_750_000_000})):
        item = {"pk": {"S": "SYNC"}, "sk": {"S": tenant_id}}
        item |= {name: {"N": str(value)} for name, value in fields.items()}
        ddb.put_item(TableName=delivery.env["STATE_TABLE"], Item=item)

    found = samples(scrape()["body"])
    assert found[("gmp_report_failures", (("tenant_id", "acme"),))] == 4
    assert found[("gmp_report_failures", (("tenant_id", "globex"),))] == 0
    assert found[("gmp_report_last_success_timestamp_seconds", (("tenant_id", "globex"),))] == 1_750_000_000


def test_every_metric_of_the_dashboard_and_the_alerts_is_in_the_metrics_output(delivery: Delivery) -> None:
    mixed_traffic(delivery)
    delivery.scheduler()
    exposed = {s.name for family in text_string_to_metric_families(scrape()["body"]) for s in family.samples}

    dashboard = json.loads((EXAMPLES / "grafana_dashboard" / "serverless-mail-proxy.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    rules = (EXAMPLES / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\bgmp_[a-z_]+", "\n".join([*expressions, rules])))

    assert used >= set(CORE_SERIES)
    assert used <= exposed, used - exposed


def test_metrics_token_requires_the_bearer_header(delivery: Delivery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", "scrape-token-5a1f")

    assert scrape()["statusCode"] == 401
    assert scrape(Authorization="Bearer wrong")["statusCode"] == 401
    assert scrape(Authorization="Basic scrape-token-5a1f")["statusCode"] == 401
    assert scrape(authorization="Bearer scrape-token-5a1f")["statusCode"] == 200
    assert "gmp_sent_total" in scrape(Authorization="Bearer scrape-token-5a1f")["body"]


@pytest.mark.aws_only("the generated metrics token is a Secrets Manager secret")
def test_on_aws_metrics_wants_the_generated_token_read_from_its_secret_on_a_scrape_and_cached(
    delivery: Delivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import aws, secret_cache
    from mailproxy.settings import get_settings

    secret = delivery.env.client("secretsmanager").create_secret(Name="metrics", SecretString="generated-1")
    monkeypatch.setenv("METRICS_TOKEN_SECRET_ARN", secret["ARN"])
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    get_settings.cache_clear()
    reads: list[Any] = []
    aws.client("secretsmanager").meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue", lambda params, **_: reads.append(params)
    )

    assert scrape()["statusCode"] == 401
    assert scrape(Authorization="Bearer wrong")["statusCode"] == 401
    assert scrape(Authorization="Bearer generated-1")["statusCode"] == 200
    assert len(reads) == 1  # one read per container, not per scrape

    # Rotated: the old token works until the cached value is GMP_SECRET_MAX_AGE_SECONDS (300) old, then only the new.
    delivery.env.client("secretsmanager").put_secret_value(SecretId=secret["ARN"], SecretString="generated-2")
    assert scrape(Authorization="Bearer generated-1")["statusCode"] == 200
    later = secret_cache.time.monotonic() + 301
    monkeypatch.setattr(secret_cache.time, "monotonic", lambda: later)
    assert scrape(Authorization="Bearer generated-1")["statusCode"] == 401
    assert scrape(Authorization="Bearer generated-2")["statusCode"] == 200
    assert len(reads) == 2


def test_health_answers_without_aws_and_imports_no_boto3() -> None:
    code = (
        "import functions.metrics.app as m, json, sys\n"
        "r = m.handler({'path': '/health', 'resource': '/health', 'httpMethod': 'GET'}, None)\n"
        "assert r['statusCode'] == 200, r\n"
        "assert json.loads(r['body']) == {'ok': True, 'status': 'ok'}, r\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto imported'\n"
    )
    # No AWS settings at all: /health must not need any, nor read the metrics token's secret.
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}",
        "METRICS_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:metrics",
    }
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_counters_stay_exact_with_many_concurrent_senders(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.settings import get_settings

    # A session for every sender at once: this test is about the counters, not about waiting for sessions.
    monkeypatch.setenv("GMP_SMTP_MAX_CONNECTIONS", "40")
    get_settings.cache_clear()
    delivery.set_account(server.port, max_connections=40)

    plan = {"ok": 24, "reject550": 8, "temp451": 8}
    submitted = [
        message(f"{kind}-{n}", to=f"{kind}-{n}@example.test" if kind != "ok" else f"user{n}@example.test")
        for kind, count in plan.items()
        for n in range(count)
    ]
    submitted += [message(f"lim-{n}", account_id="limited") for n in range(12)]
    delivery.submit(*submitted)
    bodies = delivery.drain(2)
    assert len(bodies) == len(submitted)
    senders_racing(bodies, 8)

    text = scrape()["body"]
    records = delivery.records()
    limited_sent = sum(1 for r in records.values() if r["id"].startswith("lim-") and r["status"] == "sent")
    assert 3 <= limited_sent <= 6  # a minute window may roll over mid-test
    assert account_values(text, "acme", "smtp") == {
        "gmp_sent_total": 24,
        "gmp_errors_total": 8,
        "gmp_deferred_total": 8,
        "gmp_rate_limited_total": 0,
    }
    assert account_values(text, "acme", "limited") == {
        "gmp_sent_total": limited_sent,
        "gmp_errors_total": 0,
        "gmp_deferred_total": 12 - limited_sent,
        "gmp_rate_limited_total": 12 - limited_sent,
    }
    unsent = sum(1 for r in records.values() if r["status"] not in ("sent", "error"))
    assert unsent == 8 + 12 - limited_sent
    assert samples(text)[("gmp_pending_messages", ())] == unsent
    assert len(server.handler.received) == 24 + limited_sent


def test_a_new_account_has_its_series_at_zero_before_its_first_event(api: TestClient, admin: dict[str, str]) -> None:
    api.post("/tenant", json={"id": "fresh"}, headers=admin)
    api.post("/account", json={"id": "new", "tenant_id": "fresh", "host": "127.0.0.1", "port": 25}, headers=admin)

    found = samples(scrape()["body"])
    labels = (("account_id", "new"), ("tenant_id", "fresh"))
    for name in ("gmp_sent_total", "gmp_errors_total", "gmp_deferred_total", "gmp_rate_limited_total"):
        assert found[(name, labels)] == 0.0
