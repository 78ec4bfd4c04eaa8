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
        "mailproxy.ports",  # types only (Protocols): for mypy, not for a cold start
        "fastapi",
        "pydantic",
        "mailproxy.api",
        "mailproxy.models",
        "mailproxy.attachments",  # only a message with attachments needs the fetcher
        "mailproxy.reports",
        "http.client",
        "mailproxy.verp",  # only an account with VERP on needs it
        "mailproxy.bounces",
        "imaplib",
    ],
    "functions.scheduler.app": [
        "mailproxy.ports",  # types only (Protocols): for mypy, not for a cold start
        "fastapi",
        "pydantic",
        "aiosmtplib",
        "mailproxy.smtp",
        "mailproxy.tenants",
        "mailproxy.queues",  # only a round with something due sends to SQS
        "mailproxy.reports",
    ],
    "functions.reporter.app": [
        "mailproxy.ports",  # types only (Protocols): for mypy, not for a cold start
        "fastapi",
        "pydantic",
        "aiosmtplib",
        "mailproxy.smtp",
        "mailproxy.sender",
        "mailproxy.email_builder",
        "mailproxy.attachments",
        "mailproxy.api",
    ],
    "functions.bounce.app": [
        "mailproxy.ports",  # types only (Protocols): for mypy, not for a cold start
        "fastapi",
        "pydantic",
        "aiosmtplib",
        "mailproxy.smtp",
        "mailproxy.sender",
        "mailproxy.api",
        "mailproxy.reports",
        "mailproxy.attachments",
    ],
    "functions.rotation.app": [
        "fastapi",
        "pydantic",
        "aiosmtplib",
        "mailproxy.tenants",
        "mailproxy.adapters.aws.dynamo",
        "mailproxy.api",
        "mailproxy.sender",
    ],
    "functions.intake.app": [
        "mailproxy.ports",  # types only (Protocols): for mypy, not for a cold start
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


def test_the_first_request_loads_neither_pydantic_v1_nor_anyio_workers() -> None:
    # FastAPI would import pydantic.v1 (~45 ms) to check the first route's parameters, and a sync handler would
    # load anyio's worker threads (~15 ms): neither serves a request. Stopped at the first AWS call.
    code = (
        "import json, sys\n"
        "import mailproxy.aws as aws\n"
        "class Stop(BaseException): pass\n"
        "def first_call(service): raise Stop(service)\n"
        "aws.client = first_call\n"
        "from functions.intake.app import handler\n"
        "event = {'resource': '/{proxy+}', 'path': '/commands/add-messages', 'httpMethod': 'POST',\n"
        " 'headers': {'Content-Type': 'application/json', 'X-API-Token': 'admin-token'}, 'multiValueHeaders': {},\n"
        " 'queryStringParameters': None, 'multiValueQueryStringParameters': None, 'pathParameters': None,\n"
        " 'stageVariables': None, 'requestContext': {'resourcePath': '/{proxy+}', 'httpMethod': 'POST',\n"
        " 'stage': 'prod', 'requestId': 'r', 'identity': {'sourceIp': '127.0.0.1'}},\n"
        " 'body': json.dumps({'messages': [{'id': 'm-1', 'tenant_id': 't1', 'account_id': 'a',\n"
        " 'from': 'a@b.example', 'to': ['c@d.example'], 'subject': 's', 'body': 'b'}]}), 'isBase64Encoded': False}\n"
        "try:\n"
        "    handler(event, None)\n"
        "except Stop:\n"
        "    pass\n"
        "print('LOADED:' + ','.join(m for m in ('pydantic.v1', 'anyio._backends._asyncio') if m in sys.modules))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}",
        "GMP_API_TOKEN": "admin-token",
        **{name: "x" for name in ("TENANTS_TABLE", "MESSAGES_TABLE", "PAYLOADS_TABLE", "STATE_TABLE")},
        **{f"{p}_QUEUE_URL": "q" for p in ("IMMEDIATE", "HIGH", "MEDIUM", "LOW")},
        "PAYLOAD_BUCKET": "b",
        "SECRETS_KEY_ID": "k",
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Stop: dynamodb" in done.stderr, done.stderr  # the request got as far as its work (Mangum logs the stop)
    assert done.stdout.splitlines()[-1] == "LOADED:"


def test_a_pydantic_v1_model_is_still_recognised_once_pydantic_v1_is_imported() -> None:
    import warnings

    from fastapi._compat import shared
    from mailproxy.api import create_app

    create_app()  # installs the guard
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydantic import v1

    class Legacy(v1.BaseModel):
        name: str

    assert shared.is_pydantic_v1_model_class(Legacy)
    assert not shared.is_pydantic_v1_model_class(int)
