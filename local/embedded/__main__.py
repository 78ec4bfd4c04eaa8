"""`python -m local.embedded` (`make run`): the one-machine runtime in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from local.embedded.service import DataDirInUse, EmbeddedService

logger = logging.getLogger("local.embedded")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # `kill`, `docker stop` and Kubernetes send SIGTERM: stop as cleanly as on Ctrl-C.
    raise KeyboardInterrupt


def main() -> int:
    """Run the service in the foreground; the exit status is 1 when it cannot start."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-8s %(message)s",
        stream=sys.stdout,
    )
    # Client libraries log every connection at INFO: noise next to the service's logs.
    for noisy in ("botocore", "boto3", "urllib3", "httpx", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)

    # GMP_HOST=0.0.0.0 in a container (examples/docker), so the published ports reach the API and the sink.
    service = EmbeddedService(host=os.environ.get("GMP_HOST", "").strip() or "127.0.0.1")
    try:
        service.start()
    except OSError as exc:
        logger.error("cannot start: %s (is another one running? set GMP_PORT / GMP_SMTP_SINK_PORT)", exc)
        return 1
    except DataDirInUse as exc:
        logger.error("cannot start: %s (set GMP_DATA_DIR to another folder)", exc)
        return 1
    print(service.banner(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
