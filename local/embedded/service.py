"""The one-machine runtime (`make run`, a container): the API, sender worker processes, the scheduler, the
reporter and retention over the SQLite adapter, with every accepted message kept in GMP_DATA_DIR.

```
EmbeddedService (main process)
 ├─ http.py     uvicorn: the API app; GET /health and /metrics by the MetricsFunction's handler
 ├─ loops.py    threads: scheduler, reporter (change log, schedule), retention
 ├─ workers.py  GMP_SENDER_WORKERS processes of GMP_SENDER_BATCHES slots: lease a batch, sender.handle_batch, delete / give back
 └─ smtp_sink   SMTP on GMP_SMTP_SINK_PORT that logs what arrives (local/smtp_sink.py)
```
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import IO

from local.embedded.http import HttpServer, ServiceApp
from local.embedded.loops import Loop, service_loops
from local.embedded.workers import BATCH_TIMEOUT_SECONDS, DEFAULT_BATCHES, SenderWorkers
from local.environment import (
    LOCAL_ALLOWED_NETWORKS,
    EnvironmentPatch,
    admin_token,
    admin_token_line,
    reset_package_caches,
)
from local.smtp_sink import DEFAULT_PORT as DEFAULT_SMTP_SINK_PORT
from local.smtp_sink import SmtpSink

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_HTTP_PORT = 8000
DEFAULT_SCHEDULER_INTERVAL = 1.0
DEFAULT_SENDER_WORKERS = 2
LOCK_FILE = "runtime.lock"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


class DataDirInUse(RuntimeError):
    """Another runtime holds the data directory."""


class DataDirLock:
    """An exclusive lock on a data directory for the life of the runtime's main process (released by the kernel
    when it dies, `kill -9` included): one runtime per database, so its schedulers and leases are its own."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock; DataDirInUse if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataDirInUse(f"{self.path.parent} is used by another runtime (pid {holder})") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Let the lock go."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class EmbeddedService:
    """Starts and stops the one-machine runtime over the SQLite database of `data_dir`.

    Arguments left as None come from the environment: GMP_DATA_DIR (default `data/` in the project), GMP_PORT
    (8000), GMP_SMTP_SINK_PORT (1025; 0 there turns the sink off), GMP_API_TOKEN (generated and printed when
    unset), GMP_SCHEDULER_INTERVAL (1 s), GMP_SENDER_WORKERS (2), GMP_SENDER_BATCHES (4 slots per worker). An
    explicit port 0 picks a free port, which lets tests run beside a developer's `make run`. Every environment
    change is undone by `stop()`.
    """

    def __init__(
        self,
        *,
        data_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        smtp_sink_port: int | None = None,
        smtp_sink: bool = True,
        api_token: str | None = None,
        scheduler_interval: float | None = None,
        sender_workers: int | None = None,
        sender_batches: int | None = None,
    ) -> None:
        self.host = host
        self._data_dir = data_dir
        self._http_port = http_port
        self._smtp_sink_port = smtp_sink_port
        self._smtp_sink_enabled = smtp_sink
        self._api_token = api_token
        self._scheduler_interval = scheduler_interval
        self._sender_workers = sender_workers
        self._sender_batches = sender_batches

        self.environment_patch = EnvironmentPatch()
        self.lock: DataDirLock | None = None
        self.http: HttpServer | None = None
        self.smtp_sink: SmtpSink | None = None
        self.loops: list[Loop] = []
        self.workers: SenderWorkers | None = None
        self.data_dir = Path()
        self.api_token = ""
        self.api_token_generated = False
        self.allowed_networks = ""
        self.scheduler_interval = DEFAULT_SCHEDULER_INTERVAL
        self.visibility_seconds = 0
        self.sealing_key_given = False

    # ------------------------------------------------------------------ what tests and the banner read

    @property
    def url(self) -> str:
        """Base URL of the API."""
        if self.http is None:
            raise RuntimeError("the service is not started")
        return self.http.url

    @property
    def http_port(self) -> int:
        """The port the API listens on."""
        if self.http is None:
            raise RuntimeError("the service is not started")
        return self.http.port

    @property
    def smtp_sink_port(self) -> int | None:
        """The SMTP sink's port, None when it is off."""
        return self.smtp_sink.port if self.smtp_sink is not None else None

    @property
    def database_path(self) -> Path:
        """The SQLite database file."""
        from mailproxy.adapters.sqlite import database_path

        return Path(database_path(str(self.data_dir)))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmbeddedService:
        """Start everything, in order: settings, database, API, SMTP sink, loops, sender workers."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._configure()
        self.lock = DataDirLock(self.data_dir)
        self.lock.acquire()
        from mailproxy.settings import get_settings
        from mailproxy.stores import stores

        settings = get_settings()
        stores()  # the database and its tables, made here once before any worker opens them
        from local.embedded.ports import recover_leases

        queue_leases, report_leases, session_leases = recover_leases()
        if queue_leases or report_leases or session_leases:
            logger.info(
                "taken back from a runtime that stopped without finishing: %d queue lease(s), %d report lease(s), "
                "%d SMTP session lease(s)",
                queue_leases,
                report_leases,
                session_leases,
            )
        # A record leased by a worker that died comes back when a claim made under it is stale: the copy then
        # takes the claim over (or the scheduler, finishing the batch's journal, re-queues the message).
        self.visibility_seconds = max(1, settings.claim_timeout_seconds)
        if settings.claim_timeout_seconds <= BATCH_TIMEOUT_SECONDS:
            logger.warning(
                "GMP_CLAIM_TIMEOUT_SECONDS (%d) is not above a sender batch's time budget (%.0f s): a batch that "
                "ran that long could see its claims taken over and its messages sent twice",
                settings.claim_timeout_seconds,
                BATCH_TIMEOUT_SECONDS,
            )

        from mailproxy.api import create_app

        http_port = self._http_port if self._http_port is not None else _env_int("GMP_PORT", DEFAULT_HTTP_PORT)
        self.http = HttpServer(ServiceApp(create_app()), self.host, http_port)
        # Download links and upload forms name this server unless the operator gives its public address.
        self.environment_patch.setdefault("GMP_PUBLIC_BASE_URL", self.http.url)
        reset_package_caches()
        self.http.start()

        sink_port = self._smtp_sink_port
        if sink_port is None:
            # From the environment 0 means off; as an argument it means any free port.
            sink_port = _env_int("GMP_SMTP_SINK_PORT", DEFAULT_SMTP_SINK_PORT) or None
        if self._smtp_sink_enabled and sink_port is not None:
            self.smtp_sink = SmtpSink(self.host, sink_port)
            self.smtp_sink.start()

        from mailproxy.settings import get_settings

        self.loops = service_loops(self.scheduler_interval, get_settings().bounce_interval)
        for loop in self.loops:
            loop.start()
        count = self._sender_workers
        if count is None:
            count = _env_int("GMP_SENDER_WORKERS", DEFAULT_SENDER_WORKERS)
        batches = self._sender_batches
        if batches is None:
            batches = _env_int("GMP_SENDER_BATCHES", DEFAULT_BATCHES)
        self.workers = SenderWorkers(count, visibility_seconds=self.visibility_seconds, batches=batches)
        self.workers.start()

    def _configure(self) -> None:
        """This process's environment, which the spawned workers are given too; then a cold start of the package."""
        patch = self.environment_patch
        patch.setdefault("LOG_FORMAT", "text")
        patch.set("GMP_STORAGE", "sqlite")
        raw_dir = self._data_dir if self._data_dir is not None else os.environ.get("GMP_DATA_DIR", "").strip()
        self.data_dir = Path(raw_dir or DEFAULT_DATA_DIR).expanduser().resolve()
        patch.set("GMP_DATA_DIR", str(self.data_dir))
        self.sealing_key_given = bool(os.environ.get("GMP_SEALING_KEY", "").strip())
        self.allowed_networks = patch.setdefault("GMP_ALLOWED_NETWORKS", LOCAL_ALLOWED_NETWORKS)
        if self._scheduler_interval is not None:
            patch.set("GMP_SCHEDULER_INTERVAL", str(self._scheduler_interval))
        self.scheduler_interval = float(patch.setdefault("GMP_SCHEDULER_INTERVAL", str(DEFAULT_SCHEDULER_INTERVAL)))
        self.api_token, self.api_token_generated = admin_token(patch, self._api_token)
        reset_package_caches()
        from mailproxy.logs import configure_logging

        configure_logging()

    def stop(self) -> None:
        """Stop taking requests, let the workers finish their batch, stop the loops; undo the environment."""
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.workers is not None:
            self.workers.stop()
            self.workers = None
        for loop in reversed(self.loops):
            loop.stop()
        self.loops = []
        if self.smtp_sink is not None:
            self.smtp_sink.stop()
            self.smtp_sink = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        self.environment_patch.restore()
        reset_package_caches()

    def __enter__(self) -> EmbeddedService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _bounce_interval(self) -> float:
        from mailproxy.settings import get_settings

        return get_settings().bounce_interval

    def banner(self) -> str:
        """What `make run` prints once everything listens."""
        from mailproxy.adapters.sqlite.sealer import KEY_FILE

        sink = f"{self.host}:{self.smtp_sink_port}" if self.smtp_sink_port else "off (GMP_SMTP_SINK_PORT=0)"
        key = "GMP_SEALING_KEY" if self.sealing_key_given else f"{self.data_dir / KEY_FILE} (back it up with the data)"
        workers = self.workers.count if self.workers is not None else 0
        batches = self.workers.batches if self.workers is not None else 0
        return "\n".join(
            [
                "Serverless Mail Proxy: one-machine runtime ready (SQLite)",
                f"  API           {self.url}   (try: curl {self.url}/health)",
                admin_token_line(self.api_token, self.api_token_generated),
                f"  Data          {self.database_path}   (GMP_DATA_DIR; kept across restarts)",
                f"  Sealing key   {key}",
                f"  SMTP sink     {sink}",
                f"  Outbound      SMTP, attachments and callbacks may reach {self.allowed_networks} (GMP_ALLOWED_NETWORKS)",
                f"  Senders       {workers} worker processes (GMP_SENDER_WORKERS) of {batches} batch slots each"
                f" (GMP_SENDER_BATCHES), queue lease {self.visibility_seconds} s",
                f"  Loops         scheduler and reporter every {self.scheduler_interval:g} s (GMP_SCHEDULER_INTERVAL), retention every minute,",
                f"                bounce mailboxes every {self._bounce_interval():g} s (GMP_BOUNCE_INTERVAL)",
                "Ctrl-C stops.",
            ]
        )
