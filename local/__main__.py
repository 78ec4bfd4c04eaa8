"""`python -m local` (`make run-aws`): the AWS-fidelity mode in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import sys

from botocore.exceptions import BotoCoreError

from local.foreground import host, run
from local.stack import LocalStack

DEFAULT_LAMBDA_PROCESSES = 2


def _start_failure(exc: Exception) -> str | None:
    if isinstance(exc, OSError):
        return f"{exc} (is another one running? set GMP_PORT / GMP_SMTP_SINK_PORT)"
    if isinstance(exc, BotoCoreError):
        return f"cannot reach the AWS emulator: {exc} (check AWS_ENDPOINT_URL)"
    return None


def main() -> int:
    """Run the stack in the foreground; the exit status is 1 when it cannot start."""
    # `make run-aws` gives the sender two execution environments (processes) unless GMP_LAMBDA_PROCESSES says
    # otherwise: its MIME and SMTP work then uses a second core, as concurrent Lambdas do (tests use 0).
    processes = None if os.environ.get("GMP_LAMBDA_PROCESSES", "").strip() else DEFAULT_LAMBDA_PROCESSES
    return run(LocalStack(host=host(), lambda_processes=processes), _start_failure)


if __name__ == "__main__":
    sys.exit(main())
