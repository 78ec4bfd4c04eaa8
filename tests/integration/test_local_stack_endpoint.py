"""With AWS_ENDPOINT_URL set (LocalStack, for a user with Docker) the local stack uses that emulator and starts no moto."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from local import emulator as emulator_module
from local.stack import LocalStack


def test_with_aws_endpoint_url_the_stack_uses_that_emulator_and_starts_no_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's emulator is played by a moto server of the test's own. moto's state is the process's and
    # bucket names are global to it: start from none (no stack is up here) and leave none behind.
    other = emulator_module._moto_server("127.0.0.1", 0, "000000000042")
    other.start()
    host, port = other.get_host_and_port()
    httpx.post(f"http://{host}:{port}/moto-api/reset")
    try:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "ADMIN_TOKEN_SECRET_ARN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")

        def no_moto(*args: Any) -> Any:
            raise AssertionError("the stack started moto although AWS_ENDPOINT_URL names an emulator")

        monkeypatch.setattr(emulator_module, "_moto_server", no_moto)
        with LocalStack(http_port=0, smtp_sink=False, run_pollers=False) as running:
            assert running.emulator is not None and not running.emulator.uses_moto
            assert running.endpoint_url == f"http://{host}:{port}"
            assert "from AWS_ENDPOINT_URL" in running.banner()
            assert os.environ["TENANTS_TABLE"] in running.emulator.client("dynamodb").list_tables()["TableNames"]
            assert httpx.get(f"{running.url}/health").status_code == 200
    finally:
        httpx.post(f"http://{host}:{port}/moto-api/reset")
        other.stop()
