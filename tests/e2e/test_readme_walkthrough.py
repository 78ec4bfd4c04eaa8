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


def large_file_script() -> str:
    """The README's "A large file, with curl" block, unchanged."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    [script] = [b for b in blocks if "/large-files" in b]
    return script


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_large_file_goes_out_as_a_link_that_downloads_it(stack: Any, tmp_path: Path) -> None:
    video = bytes(range(256)) * (12 * 4096)  # 12 MiB: over the 10 MB the README sets, once encoded
    (tmp_path / "video.mp4").write_bytes(video)
    script = walkthrough_script() + "\n" + large_file_script()
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{stack.http_port}")
    script = script.replace('"port": 1025', f'"port": {stack.smtp_sink_port}')
    script = script.replace("open $API/docs", "true")
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr

    mails = {m.mail_id: m for m in stack.smtp_sink.wait_for(2, timeout=30)}
    message = mails["video-1"].message
    assert not list(message.iter_attachments())  # the file went as a link
    text = message.get_body(preferencelist=("plain", "html")).get_content()
    assert "Large attachments available for download" in text
    [link] = re.findall(r"http://127\.0\.0\.1:\d+/large-files/\S+", text)
    download = subprocess.run(["curl", "-s", "-L", link], capture_output=True, timeout=60)
    assert download.stdout == video
