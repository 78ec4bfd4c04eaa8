"""`python -m local` (`make run`): start the local stack and keep it up until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from botocore.exceptions import BotoCoreError

from local.stack import LocalStack

logger = logging.getLogger("local")
DEFAULT_LAMBDA_PROCESSES = 2


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # `kill` and process managers send SIGTERM: stop as cleanly as on Ctrl-C.
    raise KeyboardInterrupt


def main() -> int:
    """Run the stack in the foreground; the exit status is 1 when it cannot start."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-8s %(message)s",
        stream=sys.stdout,
    )
    # Client libraries log every credential lookup and connection at INFO: noise next to the service's logs.
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)

    # GMP_HOST=0.0.0.0 in a container (examples/docker), so the published ports reach the API and the sink.
    # `make run` gives the sender two execution environments (processes) unless GMP_LAMBDA_PROCESSES says
    # otherwise: its MIME and SMTP work then uses a second core, as concurrent Lambdas do (tests use 0).
    processes = None if os.environ.get("GMP_LAMBDA_PROCESSES", "").strip() else DEFAULT_LAMBDA_PROCESSES
    stack = LocalStack(host=os.environ.get("GMP_HOST", "").strip() or "127.0.0.1", lambda_processes=processes)
    try:
        stack.start()
    except OSError as exc:
        logger.error(
            "cannot start the local stack: %s (is another one running? set GMP_PORT / GMP_SMTP_SINK_PORT)", exc
        )
        return 1
    except BotoCoreError as exc:
        logger.error("cannot reach the AWS emulator: %s (check AWS_ENDPOINT_URL)", exc)
        return 1
    print(stack.banner(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
