"""The whole local stack in one object: emulator, API, SMTP sink and pollers, started and stopped in order."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

from local.apigw import ApiGateway, api_settings_from_template, routes_from_template
from local.emulator import Emulator
from local.environment import (
    LOCAL_ALLOWED_NETWORKS,
    EnvironmentPatch,
    admin_token,
    admin_token_line,
    reset_package_caches,
)
from local.environments import EnvironmentPool
from local.lambda_runtime import LambdaFunction
from local.pollers import Poller, PollerContext, SchedulePoller, pollers_from_template
from local.smtp_sink import DEFAULT_PORT as DEFAULT_SMTP_SINK_PORT
from local.smtp_sink import SmtpSink
from local.template import Template

logger = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8000


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _expire_messages(event: Any, context: Any) -> int:
    """MessagesTable's TTL, which moto does not play: delete messages whose retention has passed."""
    from local.ttl import expire_due

    return expire_due()


class LocalStack:
    """Starts the emulator with the template's resources, the API, the SMTP sink and the pollers.

    Ports left as None come from GMP_PORT, GMP_SMTP_SINK_PORT (0 there turns the sink off) and
    GMP_MOTO_PORT; an explicit 0 picks a free port, which lets tests run beside a developer's
    `make run`. Every environment change is undone by `stop()`.
    """

    def __init__(
        self,
        *,
        template_path: Path | str | None = None,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        smtp_sink_port: int | None = None,
        smtp_sink: bool = True,
        moto_port: int | None = None,
        endpoint_url: str | None = None,
        api_token: str | None = None,
        scheduler_interval: float | None = None,
        run_pollers: bool = True,
        sqs_workers: int | None = None,
        lambda_processes: int | None = None,
    ) -> None:
        self.template_path = template_path
        self.host = host
        self._http_port = http_port
        self._smtp_sink_port = smtp_sink_port
        self._smtp_sink_enabled = smtp_sink
        self._moto_port = moto_port
        self._endpoint_url = endpoint_url
        self._api_token = api_token
        self._scheduler_interval = scheduler_interval
        self.run_pollers = run_pollers
        self._sqs_workers = sqs_workers
        self.sqs_workers = 1
        self._lambda_processes = lambda_processes
        self.lambda_processes = 0
        self.environment_pools: list[EnvironmentPool] = []

        self.environment_patch = EnvironmentPatch()
        self.template: Template | None = None
        self.emulator: Emulator | None = None
        self.api: ApiGateway | None = None
        self.smtp_sink: SmtpSink | None = None
        self.pollers: list[Poller] = []
        self.functions: dict[str, LambdaFunction] = {}
        self.environment: dict[str, str] = {}
        self.api_token = ""
        self.api_token_generated = False
        self.allowed_networks = ""
        self.scheduler_interval = 1.0
        self.bounce_interval = 60.0

    # ------------------------------------------------------------------ what tests and the banner read

    @property
    def url(self) -> str:
        """Base URL of the API."""
        if self.api is None:
            raise RuntimeError("the stack is not started")
        return self.api.url

    @property
    def http_port(self) -> int:
        """The port the API listens on."""
        if self.api is None:
            raise RuntimeError("the stack is not started")
        return self.api.port

    @property
    def smtp_sink_port(self) -> int | None:
        """The SMTP sink's port, None when it is off."""
        return self.smtp_sink.port if self.smtp_sink is not None else None

    @property
    def endpoint_url(self) -> str:
        """The AWS emulator's endpoint."""
        if self.emulator is None:
            raise RuntimeError("the stack is not started")
        return self.emulator.endpoint_url

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalStack:
        """Start everything, in order: emulator and resources, API, SMTP sink, pollers."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        patch = self.environment_patch
        # Local defaults go in before the template's settings so they win over its AWS values.
        patch.setdefault("LOG_FORMAT", "text")
        self.allowed_networks = patch.setdefault("GMP_ALLOWED_NETWORKS", LOCAL_ALLOWED_NETWORKS)
        if self._scheduler_interval is not None:
            patch.set("GMP_SCHEDULER_INTERVAL", str(self._scheduler_interval))
        self.scheduler_interval = float(patch.setdefault("GMP_SCHEDULER_INTERVAL", "1"))
        self.api_token, self.api_token_generated = admin_token(patch, self._api_token)

        self.template = Template.load(self.template_path)
        self.emulator = Emulator(
            self.template,
            moto_port=self._moto_port,
            endpoint_url=self._endpoint_url,
            environment=patch,
        )
        self.environment = self.emulator.start()
        reset_package_caches()
        resolver = self.emulator.resolver

        for spec in self.template.functions(resolver):
            self.functions[spec.logical_id] = LambdaFunction.from_spec(
                spec,
                timeout_seconds=float(resolver.resolve(spec.timeout)),
                memory_size=int(resolver.resolve(spec.memory_size)),
                account_id=resolver.account_id,
            )

        stage, binary_media_types = api_settings_from_template(resolver)
        http_port = self._http_port if self._http_port is not None else _env_int("GMP_PORT", DEFAULT_HTTP_PORT)
        self.api = ApiGateway(
            routes_from_template(resolver, self.functions),
            stage=stage,
            binary_media_types=binary_media_types,
            host=self.host,
            port=http_port,
        )
        self.api.start()
        # LinkSigningSecret is not created locally (as the admin token's): a key for this run signs the links,
        # which name this API unless the operator gives its public address (docs/large-files.md).
        patch.setdefault("GMP_LINK_SIGNING_KEY", secrets.token_urlsafe(32))
        patch.setdefault("GMP_PUBLIC_BASE_URL", self.api.url)
        reset_package_caches()

        sink_port = self._smtp_sink_port
        if sink_port is None:
            # From the environment 0 means off; as an argument it means any free port.
            sink_port = _env_int("GMP_SMTP_SINK_PORT", DEFAULT_SMTP_SINK_PORT) or None
        if self._smtp_sink_enabled and sink_port is not None:
            self.smtp_sink = SmtpSink(self.host, sink_port)
            self.smtp_sink.start()

        if self._sqs_workers is not None:
            self.sqs_workers = self._sqs_workers
        else:
            self.sqs_workers = _env_int("GMP_SQS_WORKERS", 1)
        if self.run_pollers:
            self._start_environments(resolver)
            from mailproxy.settings import get_settings

            get_settings.cache_clear()  # the environment as patched above
            # Bounce mailboxes at GMP_BOUNCE_INTERVAL, as `make run` polls them.
            self.bounce_interval = get_settings().bounce_interval
            bounce_pace = {"BounceFunction": self.bounce_interval}
            context = PollerContext(resolver, self.scheduler_interval, self.sqs_workers, bounce_pace)
            self.pollers = pollers_from_template(self.functions, context)
            # moto never expires items: play MessagesTable's TTL (report retention) on the schedule's beat.
            self.pollers.append(
                SchedulePoller(_expire_messages, interval=self.scheduler_interval, name="ttl-MessagesTable")
            )
            for poller in self.pollers:
                poller.start()
                logger.info("poller %s started", poller.name)

    def _start_environments(self, resolver: Any) -> None:
        """SQS-triggered functions run in worker processes (GMP_LAMBDA_PROCESSES), as concurrent Lambda
        execution environments do: the sender's CPU work then uses more than one core."""
        wanted = self._lambda_processes
        if wanted is None:
            wanted = _env_int("GMP_LAMBDA_PROCESSES", 0)
        emulator = self.emulator
        # The workers reach the emulator over HTTP: its endpoint, as every process of the stack does.
        if wanted <= 0 or emulator is None or not emulator.endpoint_url:
            return
        self.lambda_processes = wanted
        for spec in self.template.functions(resolver) if self.template else []:
            function = self.functions[spec.logical_id]
            if not spec.events_of_type("SQS") or not function.is_available():
                continue
            pool = EnvironmentPool(function, wanted)
            pool.start()
            function.environments = pool
            self.environment_pools.append(pool)
        # One poller thread per environment keeps them all busy.
        self.sqs_workers = max(self.sqs_workers, wanted)

    def stop(self) -> None:
        """Stop everything in reverse order and undo every environment change."""
        for poller in reversed(self.pollers):
            poller.stop()
        self.pollers = []
        for pool in self.environment_pools:
            pool.function.environments = None
            pool.stop()
        self.environment_pools = []
        if self.smtp_sink is not None:
            self.smtp_sink.stop()
            self.smtp_sink = None
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        self.environment_patch.restore()
        reset_package_caches()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def banner(self) -> str:
        """What `make run` prints once everything listens."""
        emulator = self.emulator
        assert emulator is not None
        sink = f"{self.host}:{self.smtp_sink_port}" if self.smtp_sink_port else "off (GMP_SMTP_SINK_PORT=0)"
        kind = emulator.description
        pollers = ", ".join(poller.name for poller in self.pollers) or "none yet"
        return "\n".join(
            [
                "Serverless Mail Proxy: local stack ready",
                f"  API           {self.url}   (try: curl {self.url}/health)",
                admin_token_line(self.api_token, self.api_token_generated),
                f"  SMTP sink     {sink}",
                f"  Outbound      SMTP, attachments and callbacks may reach {self.allowed_networks} (GMP_ALLOWED_NETWORKS)",
                f"  AWS emulator  {emulator.endpoint_url}   ({kind})",
                f"  Pollers       {pollers} (schedules every {self.scheduler_interval:g} s,"
                f" bounce mailboxes every {self.bounce_interval:g} s: GMP_BOUNCE_INTERVAL)",
                *(
                    f"  {pool.logical_id}  {pool.size} execution environments (processes; GMP_LAMBDA_PROCESSES)"
                    for pool in self.environment_pools
                ),
                "Ctrl-C stops.",
            ]
        )
