"""The AWS adapter: DynamoDB, SQS, S3, KMS and Secrets Manager behind the ports.

Each port is a module of functions (a module satisfies a Protocol), the only code that knows the tables'
keys and builds their expressions. A port's module is imported when a use case first reaches it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mailproxy.stores import Stores

MODULES = {
    "messages": "messages",
    "tenants": "tenants",
    "rates": "rates",
    "sessions": "sessions",
    "counters": "state",
    "journals": "state",
    "service": "state",
    "commands": "state",
    "payloads": "payloads",
    "queue": "queue",
    "outbox": "outbox",
    "ledger": "ledger",
    "sealer": "sealer",
    "bounces": "bounces",
    "suppressions": "suppressions",
    "large_files": "files",
}


def _port(name: str) -> object:
    return importlib.import_module(f"mailproxy.adapters.aws.{MODULES[name]}")


def aws_stores() -> Stores:
    """The ports on AWS."""
    return Stores(_port)


if TYPE_CHECKING:  # mypy checks that each module is its port
    from mailproxy import ports
    from mailproxy.adapters.aws import (
        bounces,
        ledger,
        messages,
        outbox,
        payloads,
        queue,
        rates,
        sealer,
        sessions,
        state,
        suppressions,
        tenants,
    )

    def _implements() -> tuple[
        ports.Messages,
        ports.Tenants,
        ports.RateWindows,
        ports.SmtpSessions,
        ports.Counters,
        ports.Journals,
        ports.ServiceState,
        ports.CommandLog,
        ports.Payloads,
        ports.WorkQueue,
        ports.Outbox,
        ports.Ledger,
        ports.Sealer,
        ports.Suppressions,
        ports.BounceState,
    ]:
        return (
            messages,
            tenants,
            rates,
            sessions,
            state,
            state,
            state,
            state,
            payloads,
            queue,
            outbox,
            ledger,
            sealer,
            suppressions,
            bounces,
        )
