"""`python -m local.embedded` (`make run`): the one-machine runtime in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys

from local.embedded.service import DataDirInUse, EmbeddedService
from local.foreground import host, run


def _start_failure(exc: Exception) -> str | None:
    if isinstance(exc, DataDirInUse):
        return f"{exc} (set GMP_DATA_DIR to another folder)"
    if isinstance(exc, OSError):
        return f"{exc} (is another one running? set GMP_PORT / GMP_SMTP_SINK_PORT)"
    return None


def main() -> int:
    """Run the service in the foreground; the exit status is 1 when it cannot start."""
    return run(EmbeddedService(host=host()), _start_failure)


if __name__ == "__main__":
    sys.exit(main())
