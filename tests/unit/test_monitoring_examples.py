"""examples/: the Prometheus configuration and alerts pass promtool, the dashboard and containers fit together."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.prometheus_support import binary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROMETHEUS = EXAMPLES / "prometheus"
DASHBOARD = EXAMPLES / "grafana_dashboard" / "serverless-mail-proxy.json"
# The original monitoring guide's PromQL, each of which a dashboard panel must show.
SEED_PANELS = {
    "Send rate": "rate(gmp_sent_total[5m])",
    "Error rate": "rate(gmp_errors_total[5m])",
    "Success rate": "rate(gmp_sent_total[5m]) / (rate(gmp_sent_total[5m]) + rate(gmp_errors_total[5m])) * 100",
    "Queue depth": "gmp_pending_messages",
    "Rate limit hits (per minute)": "increase(gmp_rate_limited_total[1m])",
    "Throughput by account": "sum by(account_id) (rate(gmp_sent_total[5m]))",
}
SEED_ALERTS = ("MailProxyHighErrorRate", "MailProxyQueueBacklog", "MailProxyRateLimited", "MailProxyDown")


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def without_selectors(expr: str) -> str:
    """A dashboard expression without its `{job=~"$job", ...}` selectors and line breaks."""
    return re.sub(r"\s+", " ", re.sub(r"\{[^}]*\}", "", expr)).strip()


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_promtool_accepts_the_aws_scrape_config(tmp_path: Path) -> None:
    # The scrape sends the generated metrics token from the file an operator writes beside the config.
    [job] = load_yaml(PROMETHEUS / "prometheus-aws.yml")["scrape_configs"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "mail-proxy-metrics-token"}
    for name in ("prometheus-aws.yml", "alerts.yml"):
        (tmp_path / name).write_text((PROMETHEUS / name).read_text())
    (tmp_path / "mail-proxy-metrics-token").write_text("token-from-secrets-manager\n")
    result = promtool("check", "config", "prometheus-aws.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_local_and_kubernetes_scrape_config(tmp_path: Path) -> None:
    result = promtool("check", "config", "prometheus.yml")
    if result.returncode != 0 and "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else with it.
        config = load_yaml(PROMETHEUS / "prometheus.yml")
        [kubernetes] = [job for job in config["scrape_configs"] if "kubernetes_sd_configs" in job]
        assert kubernetes["kubernetes_sd_configs"] == [{"role": "pod"}]
        config["scrape_configs"].remove(kubernetes)
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text())
        result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # alerts_test.yml feeds each alert the traffic it describes (and a healthy service) and checks what fires.
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alerts_are_the_guides_four_with_their_expressions() -> None:
    rules = {r["alert"]: r for g in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]}
    assert set(SEED_ALERTS) <= set(rules)
    assert without_selectors(rules["MailProxyHighErrorRate"]["expr"]) == (
        "rate(gmp_errors_total[5m]) / (rate(gmp_sent_total[5m]) + rate(gmp_errors_total[5m])) > 0.1"
    )
    assert rules["MailProxyQueueBacklog"]["expr"] == "gmp_pending_messages > 1000"
    assert rules["MailProxyRateLimited"]["expr"] == "increase(gmp_rate_limited_total[5m]) > 100"
    assert [rules[a]["for"] for a in SEED_ALERTS] == ["5m", "10m", "5m", "1m"]
    assert [rules[a]["labels"]["severity"] for a in SEED_ALERTS] == ["warning", "warning", "info", "critical"]


def test_every_scrape_job_is_watched_by_mail_proxy_down() -> None:
    jobs = [
        j["job_name"]
        for f in ("prometheus.yml", "prometheus-aws.yml")
        for j in load_yaml(PROMETHEUS / f)["scrape_configs"]
    ]
    assert jobs and all(re.fullmatch(r"mail-proxy.*", job) for job in jobs)


def test_dashboard_has_a_panel_for_each_of_the_guides_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    by_title: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        by_title.setdefault(panel["title"], []).extend(without_selectors(t["expr"]) for t in panel["targets"])
    for title, expr in SEED_PANELS.items():
        assert expr in by_title.get(title, []), (title, by_title.get(title))
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    # Every panel reads the dashboard's data source variable, so it imports into any Grafana.
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"${datasource}"}


def test_compose_and_kubernetes_examples_fit_the_scrape_config() -> None:
    compose = load_yaml(EXAMPLES / "docker-compose.yml")
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (EXAMPLES / source).exists(), source
    assert (EXAMPLES / compose["services"]["mail-proxy"]["build"]["context"] / "template.yaml").exists()
    static = load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"][0]
    assert static["static_configs"][0]["targets"] == ["mail-proxy:8000"]
    assert "8000:8000" in compose["services"]["mail-proxy"]["ports"]

    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "mail-proxy.yaml").read_text()))
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    # What the mail-proxy-kubernetes job keeps: label app=mail-proxy, a port named http.
    assert pod["metadata"]["labels"]["app"] == "mail-proxy"
    assert {"name": "http", "containerPort": 8000} in container["ports"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"name": "GMP_HOST", "value": "0.0.0.0"} in container["env"]
    # The data directory is on a volume: a PersistentVolumeClaim, and a named volume in compose.
    [claim] = [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "mail-proxy-data:/data" in compose["services"]["mail-proxy"]["volumes"]


@pytest.mark.parametrize(
    "line", ['CMD ["python", "-m", "local.embedded"]', "GMP_HOST=0.0.0.0", "GMP_DATA_DIR=/data", 'VOLUME ["/data"]']
)
def test_dockerfile_runs_the_one_machine_runtime_on_every_interface_with_its_data_on_a_volume(line: str) -> None:
    assert line in (EXAMPLES / "docker" / "Dockerfile").read_text()
