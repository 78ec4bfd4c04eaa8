"""docs/monitoring.md end to end: Debian's Prometheus scrapes the local stack, and the guide's PromQL tells the truth.

One local stack (pollers on, as `make run`), a real SMTP server on loopback that refuses `reject550@…`
permanently and `temp451@…` temporarily, and Prometheus started from examples/prometheus/prometheus.yml
(its static job pointed at the stack, scraping every second, with alerts.yml loaded).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from local.stack import LocalStack
from tests.integration.prometheus_support import binary
from tests.integration.smtp_servers import RunningServer, free_port, smtp_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_EXAMPLES = ROOT / "examples" / "prometheus"
TOKEN = "e2e-admin-token-0123456789abcdefghijklmnopqrstuv"
ADMIN = {"X-API-Token": TOKEN}


@dataclass
class Prometheus:
    """A running Prometheus server and its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector of `expr` (evaluated at `at` when given)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        reply = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = reply.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def by_account(self, expr: str, at: float | None = None) -> dict[str, float]:
        """account_id → value of `expr`."""
        return {r["metric"].get("account_id", ""): float(r["value"][1]) for r in self.query(expr, at)}

    def scalar(self, expr: str, at: float | None = None) -> float:
        """The single value of `expr`."""
        [result] = self.query(expr, at)
        return float(result["value"][1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with smtp_server() as running:
        yield running


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "ADMIN_TOKEN_SECRET_ARN", "METRICS_TOKEN"):
            patch.delenv(name, raising=False)
        # A 451 is retried in 10 minutes: the deferred message stays put while the test looks.
        patch.setenv("GMP_RETRY_DELAYS", "600")
        with LocalStack(
            http_port=0, smtp_sink=False, moto_port=0, endpoint_url="", api_token=TOKEN, scheduler_interval=1
        ) as running:
            yield running


@pytest.fixture(scope="module")
def prometheus(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = binary("prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROMETHEUS_EXAMPLES / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "mail-proxy"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{stack.http_port}"]}]
    job["scrape_interval"] = "1s"
    config["scrape_configs"] = [job]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_EXAMPLES / "alerts.yml")]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            server,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    running = Prometheus(f"http://127.0.0.1:{port}", process)

    def ready() -> bool:
        assert process.poll() is None, (directory / "prometheus.log").read_text()[-2000:]
        try:
            return httpx.get(f"{running.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, "Prometheus to start")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def api(stack: LocalStack, method: str, path: str, **kwargs: Any) -> Any:
    reply = httpx.request(method, f"{stack.url}{path}", headers=kwargs.pop("headers", ADMIN), timeout=30, **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()


def message(message_id: str, account_id: str, to: str = "alice@example.test") -> dict[str, Any]:
    return {
        "id": message_id,
        "tenant_id": "acme",
        "account_id": account_id,
        "from": "Acme <noreply@acme.test>",
        "to": [to],
        "subject": f"Subject {message_id}",
        "body": f"Body of {message_id}",
    }


def records(stack: LocalStack) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in api(stack, "GET", "/messages", params={"tenant_id": "acme"})["messages"]}


def settled(stack: LocalStack, ids: list[str], final: tuple[str, ...]) -> bool:
    """Every message in `ids` has a status in `final`."""
    found = records(stack)
    return all(found.get(i, {}).get("status") in final for i in ids)


def test_prometheus_scrapes_the_local_stack_and_the_guides_promql_gives_the_true_values(
    stack: LocalStack, prometheus: Prometheus, server: RunningServer
) -> None:
    api(stack, "POST", "/tenant", json={"id": "acme", "name": "Acme"})
    base = {"tenant_id": "acme", "host": "127.0.0.1", "port": server.port, "use_tls": False}
    api(stack, "POST", "/account", json={**base, "id": "primary"})
    # Two sends an hour: whatever goes over waits for the next hour, well after this test.
    api(stack, "POST", "/account", json={**base, "id": "bulk", "limit_per_hour": 2})

    # Warm-up: every series exists, with a sent and an error on primary, before the traffic Prometheus measures.
    warm = [message("w-1", "primary"), message("w-2", "primary", "reject550@example.test"), message("w-3", "bulk")]
    api(stack, "POST", "/commands/add-messages", json={"messages": warm})
    wait_for(lambda: settled(stack, ["w-1", "w-2", "w-3"], ("sent", "error")), 30, "the warm-up messages")
    wait_for(
        lambda: (
            prometheus.by_account('gmp_sent_total{tenant_id="acme"}') == {"primary": 1, "bulk": 1}
            and prometheus.by_account("gmp_errors_total") == {"primary": 1, "bulk": 0}
        ),
        30,
        "Prometheus to scrape the warm-up",
    )
    time.sleep(3)  # a few samples at the baseline

    traffic = [message(f"ok-{n}", "primary") for n in range(4)]
    traffic += [message("bad-1", "primary", "reject550@example.test")]
    traffic += [message("later-1", "primary", "temp451@example.test")]
    traffic += [message(f"bulk-{n}", "bulk") for n in range(4)]
    api(stack, "POST", "/commands/add-messages", json={"messages": traffic})
    ids = [m["id"] for m in traffic]
    wait_for(lambda: settled(stack, ids, ("sent", "error", "deferred")), 60, "the traffic to be delivered")

    # What the service itself says happened (the hour window could roll over mid-test: count, don't assume).
    found = records(stack)
    bulk_sent = sum(found[f"bulk-{n}"]["status"] == "sent" for n in range(4))
    bulk_limited = 4 - bulk_sent
    pending = api(stack, "GET", "/status")["pending_messages"]
    assert [found[i]["status"] for i in ("ok-0", "bad-1", "later-1")] == ["sent", "error", "deferred"]
    assert pending == 1 + bulk_limited
    final = {"primary": 5.0, "bulk": 1.0 + bulk_sent}
    wait_for(
        lambda: (
            prometheus.by_account("gmp_sent_total") == final
            and prometheus.by_account("gmp_rate_limited_total") == {"primary": 0, "bulk": bulk_limited}
        ),
        30,
        "Prometheus to scrape the final counters",
    )
    time.sleep(8)  # enough samples at the final values for rate()'s extrapolation to settle
    # Evaluate at the newest sample: nothing is extrapolated past it.
    at = max(float(r["value"][1]) for r in prometheus.query("timestamp(gmp_sent_total)"))

    # Queue depth: exact, and what /status says.
    assert prometheus.scalar("gmp_pending_messages", at) == pending
    # Raw counters: exact.
    assert prometheus.by_account("gmp_errors_total", at) == {"primary": 2, "bulk": 0}
    assert prometheus.by_account("gmp_deferred_total", at) == {"primary": 1, "bulk": bulk_limited}
    # Rate-limit hits per minute: the rate-limited series went from 0 to its value inside the minute.
    assert prometheus.by_account("increase(gmp_rate_limited_total[1m])", at) == pytest.approx(
        {"primary": 0, "bulk": bulk_limited}
    )
    # Send and error rates: the true increase over 5 minutes, give or take Prometheus' extrapolation
    # of half a scrape interval at the start of a new series.
    sent_rate = prometheus.by_account("rate(gmp_sent_total[5m])", at)
    assert 4 <= sent_rate["primary"] * 300 <= 4 * 1.25
    assert bulk_sent <= sent_rate["bulk"] * 300 <= bulk_sent * 1.25 + 1e-9
    error_rate = prometheus.by_account("rate(gmp_errors_total[5m])", at)
    assert 1 <= error_rate["primary"] * 300 <= 1.25
    assert error_rate["bulk"] == 0
    # Success rate: sent / (sent + failed) of the measured traffic, exactly (both extrapolate alike).
    success = prometheus.by_account(
        "rate(gmp_sent_total[5m]) / (rate(gmp_sent_total[5m]) + rate(gmp_errors_total[5m])) * 100", at
    )
    assert success["primary"] == pytest.approx(80.0)
    if bulk_sent:
        assert success["bulk"] == pytest.approx(100.0)
    # Throughput by account: the send rates, summed over tenants (one here).
    assert prometheus.by_account("sum by(account_id) (rate(gmp_sent_total[5m]))", at) == pytest.approx(sent_rate)

    # The target is up, MailProxyDown's expression is empty, and every alert rule evaluates cleanly.
    assert prometheus.scalar('up{job="mail-proxy"}', at) == 1
    assert prometheus.query('up{job=~"mail-proxy.*"} == 0', at) == []
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    evaluated = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert {"MailProxyHighErrorRate", "MailProxyQueueBacklog", "MailProxyRateLimited", "MailProxyDown"} <= set(
        evaluated
    )
    assert set(evaluated.values()) == {"ok"}, evaluated


def test_metrics_text_is_the_same_through_the_local_stack_and_as_a_lambda_invocation(stack: LocalStack) -> None:
    from functions.metrics.app import handler

    event: dict[str, Any] = {
        "resource": "/metrics",
        "path": "/metrics",
        "httpMethod": "GET",
        "headers": {},
        "body": None,
    }
    for _ in range(5):
        # The scheduler's last-run gauge ticks every second: retry until no tick falls between the two.
        local = httpx.get(f"{stack.url}/metrics", timeout=10)
        invoked = handler(event, None)
        if local.text == invoked["body"]:
            break
    assert local.status_code == invoked["statusCode"] == 200
    assert local.text == invoked["body"]
    assert local.headers["content-type"] == invoked["headers"]["Content-Type"]
    assert "# TYPE gmp_pending_messages gauge" in local.text


def test_promtool_accepts_the_local_stacks_metrics(stack: LocalStack) -> None:
    text = httpx.get(f"{stack.url}/metrics", timeout=10).text
    result = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_metrics_token_is_required_through_the_local_stack(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", "local-scrape-token")
    assert httpx.get(f"{stack.url}/metrics", timeout=10).status_code == 401
    authorized = httpx.get(f"{stack.url}/metrics", headers={"Authorization": "Bearer local-scrape-token"}, timeout=10)
    assert authorized.status_code == 200
    assert json.loads(httpx.get(f"{stack.url}/health", timeout=10).text) == {"ok": True, "status": "ok"}
