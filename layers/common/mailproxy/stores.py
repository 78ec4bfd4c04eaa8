"""The one place a use case gets its ports: the adapter `GMP_STORAGE` names, made once per process."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from mailproxy.settings import get_settings

if TYPE_CHECKING:
    from mailproxy.ports import (
        BounceState,
        CommandLog,
        Counters,
        Journals,
        LargeFiles,
        Ledger,
        Messages,
        Outbox,
        Payloads,
        RateWindows,
        Sealer,
        ServiceState,
        SmtpSessions,
        Suppressions,
        Tenants,
        WorkQueue,
    )


class Stores:
    """Every port, as one adapter implements them, each made on its first use by `make(name)`: an AWS
    function's cold start then imports only the adapter modules its use case reaches."""

    __slots__ = ("_made", "_make")

    def __init__(self, make: Callable[[str], object]) -> None:
        self._make = make
        self._made: dict[str, object] = {}

    def _port(self, name: str) -> Any:
        port = self._made.get(name)
        if port is None:
            port = self._made[name] = self._make(name)
        return port

    @property
    def messages(self) -> Messages:
        return cast("Messages", self._port("messages"))

    @property
    def tenants(self) -> Tenants:
        return cast("Tenants", self._port("tenants"))

    @property
    def rates(self) -> RateWindows:
        return cast("RateWindows", self._port("rates"))

    @property
    def sessions(self) -> SmtpSessions:
        return cast("SmtpSessions", self._port("sessions"))

    @property
    def counters(self) -> Counters:
        return cast("Counters", self._port("counters"))

    @property
    def journals(self) -> Journals:
        return cast("Journals", self._port("journals"))

    @property
    def service(self) -> ServiceState:
        return cast("ServiceState", self._port("service"))

    @property
    def commands(self) -> CommandLog:
        return cast("CommandLog", self._port("commands"))

    @property
    def payloads(self) -> Payloads:
        return cast("Payloads", self._port("payloads"))

    @property
    def queue(self) -> WorkQueue:
        return cast("WorkQueue", self._port("queue"))

    @property
    def outbox(self) -> Outbox:
        return cast("Outbox", self._port("outbox"))

    @property
    def ledger(self) -> Ledger:
        return cast("Ledger", self._port("ledger"))

    @property
    def sealer(self) -> Sealer:
        return cast("Sealer", self._port("sealer"))

    @property
    def bounces(self) -> BounceState:
        return cast("BounceState", self._port("bounces"))

    @property
    def suppressions(self) -> Suppressions:
        return cast("Suppressions", self._port("suppressions"))

    @property
    def large_files(self) -> LargeFiles:
        return cast("LargeFiles", self._port("large_files"))


@functools.cache
def stores() -> Stores:
    """The ports of this process: the AWS adapter (Lambda, the AWS-fidelity local mode) or SQLite (`make run`)."""
    if get_settings().storage == "sqlite":
        from mailproxy.adapters.sqlite import sqlite_stores

        return sqlite_stores()
    from mailproxy.adapters.aws import aws_stores

    return aws_stores()


def reset() -> None:
    """Forget the ports made (tests that change GMP_STORAGE or its settings)."""
    stores.cache_clear()
