"""Each function's cold start loads what its own path needs, not what another function's does (not timed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]

# handler module -> modules that importing it must not load
NOT_LOADED = {
    "functions.sender.app": [
        "fastapi",
        "pydantic",
        "mailproxy.api",
        "mailproxy.models",
        "mailproxy.attachments",  # only a message with attachments needs the fetcher
        "mailproxy.reports",
        "http.client",
    ],
    "functions.scheduler.app": [
        "fastapi",
        "pydantic",
        "aiosmtplib",
        "mailproxy.smtp",
        "mailproxy.tenants",
        "mailproxy.queues",  # only a round with something due sends to SQS
        "mailproxy.reports",
    ],
    "functions.reporter.app": [
        "fastapi",
        "pydantic",
        "aiosmtplib",
        "mailproxy.smtp",
        "mailproxy.sender",
        "mailproxy.email_builder",
        "mailproxy.attachments",
        "mailproxy.api",
    ],
    "functions.intake.app": [
        "aiosmtplib",
        "mailproxy.smtp",
        "mailproxy.sender",
        "mailproxy.attachments",
        "mailproxy.reports",
        "mailproxy.replies",  # the reply models are built for /openapi.json only
    ],
}


@pytest.mark.parametrize("module", sorted(NOT_LOADED))
def test_a_handler_does_not_load_what_other_functions_need(module: str) -> None:
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print('LOADED:' + ','.join(m for m in {NOT_LOADED[module]!r} if m in sys.modules))\n"
    )
    # No AWS settings: importing a handler must not need them (nothing happens at import).
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.splitlines()[-1].removeprefix("LOADED:")  # the handler logs its start before
    assert loaded == "", f"{module} loads {loaded}"


def test_the_api_builds_only_the_routes_it_serves() -> None:
    from mailproxy.api import LazyRoute, create_app

    app = create_app()
    lazy = [r for r in app.routes if isinstance(r, LazyRoute)]
    assert len(lazy) > 20
    assert not [r.path for r in lazy if "_pending" not in vars(r)], "a route was built at start"
    client = TestClient(app)
    assert client.get("/docs").status_code == 200
    assert [r.path for r in lazy if "_pending" not in vars(r)] == ["/docs"]
    assert client.get("/openapi.json").json()["paths"]["/status"]["get"]["responses"]["200"]  # a documented twin's
    assert [r.path for r in lazy if "_pending" not in vars(r)] == ["/docs"]
