"""Both local runtimes behind one context manager, for the tests that drive the whole service over HTTP.

`make run` is the one-machine runtime (`local.embedded`, SQLite in a data directory); `make run-aws` is the
AWS-fidelity mode (`local.stack`, the Lambda handlers around moto). Both listen on free ports, serve the same
API, `/health` and `/metrics`, and have an SMTP sink (`smtp_sink`, `smtp_sink_port`) and `url`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any

RUNTIMES = ("embedded", "aws")
CLEARED = (
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "ADMIN_TOKEN_SECRET_ARN",
    "METRICS_TOKEN",
    "GMP_PUBLIC_BASE_URL",
    "GMP_LINK_SIGNING_KEY",
)


@contextlib.contextmanager
def running(runtime: str, *, api_token: str, scheduler_interval: float | None = None, **options: Any) -> Iterator[Any]:
    """The runtime started on free ports (a fresh data directory for the embedded one), stopped after."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        for name in CLEARED:
            patch.delenv(name, raising=False)
        if runtime == "embedded":
            from local.embedded import EmbeddedService

            with (
                tempfile.TemporaryDirectory(prefix="gmp-data-") as data_dir,
                EmbeddedService(
                    data_dir=data_dir,
                    http_port=0,
                    smtp_sink_port=0,
                    api_token=api_token,
                    scheduler_interval=scheduler_interval,
                    **options,
                ) as service,
            ):
                yield service
        else:
            from local.stack import LocalStack

            with LocalStack(
                http_port=0,
                smtp_sink_port=0,
                moto_port=0,
                api_token=api_token,
                scheduler_interval=scheduler_interval,
                **options,
            ) as stack:
                yield stack
