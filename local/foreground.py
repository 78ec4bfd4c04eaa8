"""Running one of the local runtimes in the foreground (`make run`, `make run-aws`) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

# Client libraries log every credential lookup and connection at INFO: noise next to the service's logs.
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "httpx", "werkzeug", "mail.log")


class Runtime(Protocol):
    """What both runtimes offer the foreground runner."""

    def start(self) -> object: ...

    def stop(self) -> object: ...

    def banner(self) -> str: ...


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # `kill`, `docker stop` and Kubernetes send SIGTERM: stop as cleanly as on Ctrl-C.
    raise KeyboardInterrupt


def host() -> str:
    """GMP_HOST: 0.0.0.0 in a container (examples/docker), so the published ports reach the API and the sink."""
    return os.environ.get("GMP_HOST", "").strip() or "127.0.0.1"


def run(runtime: Runtime, start_failure: Callable[[Exception], str | None]) -> int:
    """Start `runtime`, print its banner and wait for Ctrl-C or SIGTERM; 1 when it cannot start.
    `start_failure` turns an exception of the start into the error to log, or None to let it propagate."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-8s %(message)s",
        stream=sys.stdout,
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        runtime.start()
    except Exception as exc:
        message = start_failure(exc)
        if message is None:
            raise
        logging.getLogger("local").error("cannot start: %s", message)
        return 1
    print(runtime.banner(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
    finally:
        # A second Ctrl-C or SIGTERM (a shell and a supervisor both signalling) must not cut the stop short:
        # the workers are finishing their batch. A process manager's SIGKILL still ends it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runtime.stop()
    return 0
