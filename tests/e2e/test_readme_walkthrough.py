"""The README's curl walk-through, run as written against what `make run` starts (the one-machine runtime)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtimes import running

README = Path(__file__).resolve().parents[2] / "README.md"
TOKEN = "admin-secret"

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack() -> Iterator[Any]:
    with running("embedded", api_token=TOKEN) as service:
        yield service


def walkthrough_script() -> str:
    """The README's second shell block of the walk-through (the curl commands), unchanged."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    [script] = [b for b in blocks if "add-messages" in b and "API=" in b]
    return script


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_walkthrough_puts_a_message_into_the_smtp_sink(stack: Any) -> None:
    assert stack.smtp_sink is not None
    script = walkthrough_script()
    # The README names the default ports; the test's stack listens on free ones.
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{stack.http_port}")
    script = script.replace('"port": 1025', f'"port": {stack.smtp_sink_port}')
    script = script.replace("open $API/docs", "curl -s -o /dev/null -w '%{http_code}\\n' $API/docs")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert '{"ok":true,"queued":1,"rejected":[]}' in run.stdout

    [mail] = stack.smtp_sink.wait_for(1, timeout=20)
    assert mail.mail_id == "welcome-1"
    assert mail.subject == "Welcome!"

    deadline = time.monotonic() + 20
    status = ""
    while status != "sent" and time.monotonic() < deadline:
        listing = subprocess.run(
            ["curl", "-s", f"{stack.url}/messages?tenant_id=acme", "-H", f"X-API-Token: {TOKEN}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        [record] = json.loads(listing.stdout)["messages"]
        status = record["status"]
        time.sleep(0.2)
    assert status == "sent"
