"""`kill -9` of the one-machine runtime in the middle of sending, then a start on the same data directory: every
accepted message is delivered and reported, none twice except inside docs/delivery.md's one window (a message
the server received whose result was not recorded yet: "sending" at the kill)."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from local.smtp_sink import ReceivedMail, SmtpSink
from tests.callbacks import SyncEndpoint, sync_endpoint
from tests.integration.smtp_servers import free_port
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "kill-test-admin-token"
MESSAGES = 300
PER_REQUEST = 100
KILL_AFTER = 60  # deliveries after the last request was accepted: well inside the sending
pytestmark = pytest.mark.e2e


class KillingSink(SmtpSink):
    """A counting SMTP server a little slower than loopback allows (so there is a middle of the sending), which
    SIGKILLs the runtime's whole process group when it receives the `kill_at`-th message, before answering it."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 0)
        self.kill_at: int | None = None
        self.process_group: int | None = None
        self.killed = threading.Event()

    def record(self, mail: ReceivedMail) -> None:
        """Keep the message; kill the runtime when the count says so."""
        time.sleep(0.005)  # blocks the server's loop: about 200 messages/s at most, whatever the senders do
        super().record(mail)
        if self.kill_at is not None and self.count >= self.kill_at and not self.killed.is_set():
            assert self.process_group is not None
            os.killpg(self.process_group, signal.SIGKILL)
            self.killed.set()


@pytest.fixture
def sink() -> Iterator[KillingSink]:
    with KillingSink() as server:
        yield server


@pytest.fixture
def callback() -> Iterator[SyncEndpoint]:
    with sync_endpoint() as endpoint:
        yield endpoint


class Runtime:
    """`python -m local.embedded` as a subprocess in its own process group (what `kill -9` of a container hits)."""

    def __init__(self, data_dir: Path, log: IO[bytes]) -> None:
        self.data_dir = data_dir
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> subprocess.Popen[bytes]:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        unwanted = ("METRICS_TOKEN", "AWS_ENDPOINT_URL", "GMP_SEALING_KEY", "GMP_STORAGE")
        env = {k: v for k, v in os.environ.items() if k not in unwanted and not k.startswith("PYTEST_")}
        env.update(
            PYTHONPATH=f"{ROOT / 'layers' / 'common'}{os.pathsep}{ROOT}",
            GMP_DATA_DIR=str(self.data_dir),
            GMP_PORT=str(port),
            GMP_SMTP_SINK_PORT="0",
            GMP_API_TOKEN=TOKEN,
            GMP_SENDER_WORKERS="2",
            GMP_SCHEDULER_INTERVAL="0.5",
            # Short enough for a quick test; a batch here lasts milliseconds, far below the claim timeout.
            GMP_CLAIM_TIMEOUT_SECONDS="3",
            GMP_INTAKE_GRACE_SECONDS="2",
            GMP_ALLOWED_NETWORKS="127.0.0.0/8",
            LOG_LEVEL="WARNING",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local.embedded"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches the workers too
        )
        process = self.process
        wait_until(lambda: process.poll() is not None or _healthy(self.url), timeout=60)
        assert process.poll() is None, "the runtime exited at start (see its log)"
        return process

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL to the whole process group: also whatever outlived its main process."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _statuses(data_dir: Path, tenant_id: str) -> dict[str, str]:
    """Each message's status, read through the SQLite adapter while the runtime is down."""
    from mailproxy.adapters.sqlite import open_stores

    return {str(r["id"]): str(r["status"]) for r in open_stores(str(data_dir)).messages.list_states(tenant_id)}


# A few seconds: the restarted runtime, holding the data directory, gives back the leases its killed predecessor
# left (queue and reporter), so deliveries and reports resume at once.
def test_kill_9_in_the_middle_of_sending_loses_nothing_and_resends_only_what_was_in_flight(
    tmp_path: Path, sink: KillingSink, callback: SyncEndpoint
) -> None:
    data_dir = tmp_path / "data"
    with (tmp_path / "runtime.log").open("wb") as log:
        runtime = Runtime(data_dir, log)
        try:
            started = time.monotonic()
            sink.process_group = runtime.start().pid
            with httpx.Client(base_url=runtime.url, timeout=30) as http:
                admin = {"X-API-Token": TOKEN}
                tenant = {"id": "acme", "name": "Acme", "client_base_url": callback.url}
                key = {"X-API-Token": http.post("/tenant", json=tenant, headers=admin).json()["api_key"]}
                account = {"id": "sink", "host": "127.0.0.1", "port": sink.port}
                assert http.post("/account", json=account, headers=key).status_code == 200
                for first in range(0, MESSAGES, PER_REQUEST):
                    batch = [
                        {"id": f"m-{n:03d}", "account_id": "sink", "from": "a@acme.test", "to": "b@example.test",
                         "subject": f"#{n}", "body": "x" * 1000}
                        for n in range(first, first + PER_REQUEST)
                    ]  # fmt: skip
                    reply = http.post("/commands/add-messages", json={"messages": batch}, headers=key)
                    assert reply.json()["queued"] == PER_REQUEST
            accepted = {f"m-{n:03d}" for n in range(MESSAGES)}
            delivered_before_arming = sink.count
            assert delivered_before_arming < MESSAGES - KILL_AFTER, "sent before the kill could be armed"
            sink.kill_at = delivered_before_arming + KILL_AFTER

            assert sink.killed.wait(60), "the runtime was not killed"
            assert runtime.process is not None
            runtime.process.wait(timeout=30)
            killed_at = sink.count
            at_kill = _statuses(data_dir, "acme")
            in_flight = {i for i, status in at_kill.items() if status == "sending"}
            assert set(at_kill) == accepted  # every accepted message is in the database

            runtime.start()
            wait_until(lambda: {m.mail_id for m in sink.messages} >= accepted, timeout=90)
            wait_until(lambda: callback.sent_ids() >= accepted, timeout=60)
            with httpx.Client(base_url=runtime.url, timeout=30) as http:
                wait_until(lambda: "gmp_pending_messages 0.0" in http.get("/metrics").text, timeout=30)
                listed = http.get("/messages", headers=key).json()["messages"]
            elapsed = time.monotonic() - started
            assert runtime.stop() == 0
        finally:
            runtime.kill()

    assert {r["id"] for r in listed if r["status"] == "sent"} == accepted
    copies = collections.Counter(m.mail_id for m in sink.messages)
    duplicates = {mail_id: n - 1 for mail_id, n in copies.items() if n > 1}
    print(
        f"\n{MESSAGES} messages, killed after {killed_at} deliveries with {len(in_flight)} in flight, "
        f"{sum(duplicates.values())} duplicates, {elapsed:.1f} s"
    )
    assert set(duplicates) <= in_flight  # only a message whose result was not recorded may go out again
    assert sum(duplicates.values()) <= len(in_flight)
    assert set(copies) == accepted


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_sender_workers_stop_by_themselves_when_the_main_process_is_killed_alone(tmp_path: Path) -> None:
    with (tmp_path / "runtime.log").open("wb") as log:
        runtime = Runtime(tmp_path / "data", log)
        try:
            main = runtime.start()
            # Two senders and multiprocessing's resource tracker.
            children = wait_until(lambda: len(found := _children(main.pid)) >= 3 and found)
            os.kill(main.pid, signal.SIGKILL)  # the main process alone: its workers are orphaned
            main.wait(timeout=30)
            wait_until(lambda: not any(_alive(pid) for pid in children), timeout=10)
        finally:
            runtime.kill()
