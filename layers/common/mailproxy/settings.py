"""The settings, read from the environment on first use and validated once: the only module of the
package that reads `os.environ`."""

# No `from __future__ import annotations` here: typing.NamedTuple compiles every string annotation into a
# ForwardRef, which doubles the cost of making the NamedTuples below at each cold start.
import functools
import ipaddress
import os
from typing import NamedTuple

from mailproxy.errors import ConfigurationError

PRIORITY_NAMES = ("immediate", "high", "medium", "low")


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _positive(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 1:
        raise ConfigurationError(f"environment variable {name} must be at least 1, got {value}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be a number, got {raw!r}") from exc


def _int_list(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be comma-separated integers") from exc
    if not values or any(v < 0 for v in values):
        raise ConfigurationError(f"environment variable {name} must list non-negative integers")
    return values


class Settings(NamedTuple):
    """Resource names and product settings (`GMP_*`) of one running function."""

    tenants_table: str
    messages_table: str
    payloads_table: str
    state_table: str
    payload_bucket: str
    secrets_key_id: str
    queue_urls: tuple[str, str, str, str]  # indexed by priority 0..3
    dead_letter_queue_url: str
    admin_token_secret_arn: str
    admin_token: str
    retry_delays: tuple[int, ...]
    max_retries: int
    sync_interval: int
    report_retention_seconds: int
    scheduler_interval: float
    intake_grace_seconds: int
    claim_timeout_seconds: int
    smtp_timeout_seconds: float
    command_log_retention_days: int
    metrics_token_secret_arn: str
    secret_max_age_seconds: int
    # Bounds on one message (docs/decisions.md "One message never wedges the sender").
    max_recipients: int = 1000
    max_header_bytes: int = 102_400
    max_header_value_bytes: int = 16_384
    max_message_bytes: int = 35 * 1024 * 1024
    message_time_limit_seconds: float = 30.0
    account_time_limit_seconds: float = 50.0
    max_claim_attempts: int = 3
    # The deployment's ceiling on any account's concurrent SMTP sessions (its `max_connections`, default 5).
    smtp_max_connections: int = 10
    smtp_verify_tls: bool = True  # GMP_SMTP_VERIFY_TLS=false: accept any certificate (a local sink, tests)
    # Which adapter holds the data (docs/architecture.md): "aws" (DynamoDB, SQS, S3, KMS) or "sqlite".
    storage: str = "aws"
    data_dir: str = ""  # GMP_DATA_DIR: the SQLite runtime's folder (its database and sealing key)
    sealing_key: str = ""  # GMP_SEALING_KEY: the SQLite runtime's AES-256 key (base64), else one in data_dir
    # Bounce mailboxes (docs/bounces.md).
    bounce_interval: float = 60.0  # GMP_BOUNCE_INTERVAL: seconds between polls in `make run` (AWS: the schedule)
    bounce_max_messages: int = 200  # GMP_BOUNCE_MAX_MESSAGES: messages read per mailbox per poll
    imap_timeout_seconds: float = 30.0  # GMP_IMAP_TIMEOUT_SECONDS: one IMAP operation
    imap_verify_tls: bool = True  # GMP_IMAP_VERIFY_TLS=false: accept any certificate (tests)
    # Bounces, the suppression list and the reputation guard (docs/suppressions.md).
    soft_bounce_limit: int = 3  # soft bounces of one address within the window that suppress it
    soft_bounce_window_seconds: int = 3 * 24 * 3600
    reputation_window_seconds: int = 24 * 3600  # the sliding window of an account's bounce and complaint rates
    reputation_min_sends: int = 200  # sends in the window below which no rate pauses an account
    bounce_rate_limit: float = 0.05  # an account at or over it is paused (SES reviews at 5 %)
    complaint_rate_limit: float = 0.001  # likewise for complaints (SES reviews at 0.1 %)
    tenant_may_resume: bool = False  # GMP_TENANT_MAY_RESUME=true: a tenant key may resume its paused account

    def __repr__(self) -> str:
        shown = (
            f"{name}={value!r}"
            for name, value in zip(self._fields, self, strict=True)
            if name not in ("admin_token", "sealing_key")
        )
        return f"Settings({', '.join(shown)})"

    def queue_url(self, priority: int) -> str:
        """The queue URL of a priority 0 (immediate) to 3 (low)."""
        return self.queue_urls[priority]


STORAGES = ("aws", "sqlite")


def _storage() -> str:
    value = os.environ.get("GMP_STORAGE", "").strip().lower() or "aws"
    if value not in STORAGES:
        raise ConfigurationError(
            f"environment variable GMP_STORAGE must be one of {', '.join(STORAGES)}, got {value!r}"
        )
    return value


def _load() -> Settings:
    storage = _storage()
    # The AWS resources are required on AWS only; the SQLite runtime keeps everything in GMP_DATA_DIR.
    resource = _required if storage == "aws" else (lambda name: os.environ.get(name, "").strip())
    return Settings(
        tenants_table=resource("TENANTS_TABLE"),
        messages_table=resource("MESSAGES_TABLE"),
        payloads_table=resource("PAYLOADS_TABLE"),
        state_table=resource("STATE_TABLE"),
        payload_bucket=resource("PAYLOAD_BUCKET"),
        secrets_key_id=resource("SECRETS_KEY_ID"),
        queue_urls=(
            resource("IMMEDIATE_QUEUE_URL"),
            resource("HIGH_QUEUE_URL"),
            resource("MEDIUM_QUEUE_URL"),
            resource("LOW_QUEUE_URL"),
        ),
        dead_letter_queue_url=os.environ.get("DEAD_LETTER_QUEUE_URL", ""),
        admin_token_secret_arn=os.environ.get("ADMIN_TOKEN_SECRET_ARN", "").strip(),
        admin_token=os.environ.get("GMP_API_TOKEN", "").strip(),
        retry_delays=_int_list("GMP_RETRY_DELAYS", (60, 300, 900)),
        max_retries=_int("GMP_MAX_RETRIES", 3),
        sync_interval=_int("GMP_SYNC_INTERVAL", 300),
        report_retention_seconds=_int("GMP_REPORT_RETENTION_SECONDS", 7 * 24 * 3600),
        scheduler_interval=_float("GMP_SCHEDULER_INTERVAL", 60.0),
        intake_grace_seconds=_int("GMP_INTAKE_GRACE_SECONDS", 120),
        claim_timeout_seconds=_int("GMP_CLAIM_TIMEOUT_SECONDS", 180),
        smtp_timeout_seconds=_float("GMP_SMTP_TIMEOUT_SECONDS", 30.0),
        command_log_retention_days=_positive("GMP_COMMAND_LOG_RETENTION_DAYS", 30),
        metrics_token_secret_arn=os.environ.get("METRICS_TOKEN_SECRET_ARN", "").strip(),
        secret_max_age_seconds=_int("GMP_SECRET_MAX_AGE_SECONDS", 300),
        max_recipients=_int("GMP_MAX_RECIPIENTS", 1000),
        max_header_bytes=_int("GMP_MAX_HEADER_BYTES", 102_400),
        max_header_value_bytes=_int("GMP_MAX_HEADER_VALUE_BYTES", 16_384),
        max_message_bytes=_int("GMP_MAX_MESSAGE_BYTES", 35 * 1024 * 1024),
        message_time_limit_seconds=_float("GMP_MESSAGE_TIME_LIMIT_SECONDS", 30.0),
        account_time_limit_seconds=_float("GMP_ACCOUNT_TIME_LIMIT_SECONDS", 50.0),
        max_claim_attempts=max(1, _int("GMP_MAX_CLAIM_ATTEMPTS", 3)),
        smtp_max_connections=max(1, _int("GMP_SMTP_MAX_CONNECTIONS", 10)),
        smtp_verify_tls=os.environ.get("GMP_SMTP_VERIFY_TLS", "true").lower() != "false",
        storage=storage,
        data_dir=os.environ.get("GMP_DATA_DIR", "").strip(),
        sealing_key=os.environ.get("GMP_SEALING_KEY", "").strip(),
        bounce_interval=_float("GMP_BOUNCE_INTERVAL", 60.0),
        bounce_max_messages=_positive("GMP_BOUNCE_MAX_MESSAGES", 200),
        imap_timeout_seconds=_float("GMP_IMAP_TIMEOUT_SECONDS", 30.0),
        imap_verify_tls=os.environ.get("GMP_IMAP_VERIFY_TLS", "true").lower() != "false",
        soft_bounce_limit=_positive("GMP_SOFT_BOUNCE_LIMIT", 3),
        soft_bounce_window_seconds=_positive("GMP_SOFT_BOUNCE_WINDOW_SECONDS", 3 * 24 * 3600),
        reputation_window_seconds=_positive("GMP_REPUTATION_WINDOW_SECONDS", 24 * 3600),
        reputation_min_sends=_positive("GMP_REPUTATION_MIN_SENDS", 200),
        bounce_rate_limit=_float("GMP_BOUNCE_RATE_LIMIT", 0.05),
        complaint_rate_limit=_float("GMP_COMPLAINT_RATE_LIMIT", 0.001),
        tenant_may_resume=os.environ.get("GMP_TENANT_MAY_RESUME", "false").strip().lower() == "true",
    )


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read once; `get_settings.cache_clear()` re-reads them."""
    return _load()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(name: str) -> tuple[Network, ...]:
    raw = os.environ.get(name, "")
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be comma-separated CIDRs: {exc}") from exc


class OutboundSettings(NamedTuple):
    """What outbound connections may reach and how attachments are fetched. Apart from `Settings`: the
    guard and the fetcher also run where the resource names are not set (the reporter's HTTP client, tests)."""

    allowed_networks: tuple[Network, ...]  # GMP_ALLOWED_NETWORKS: internal networks the operator opened
    max_attachment_bytes: int  # GMP_MAX_ATTACHMENT_BYTES: per fetched attachment
    attachment_fetch_seconds: float  # GMP_ATTACHMENT_FETCH_SECONDS: a whole fetch, not one socket operation
    payload_bucket: str = ""  # PAYLOAD_BUCKET, never readable as an attachment ("": not set here)
    attachment_s3_prefix: str = ""  # GMP_ATTACHMENT_S3_PREFIX, checked where used ("": the default)
    attachment_reader_role_arn: str = ""  # ATTACHMENT_READER_ROLE_ARN ("": the function's own credentials)


@functools.cache
def get_outbound_settings() -> OutboundSettings:
    """The outbound settings of this process, read once; `cache_clear()` re-reads them."""
    return OutboundSettings(
        allowed_networks=_networks("GMP_ALLOWED_NETWORKS"),
        max_attachment_bytes=_int("GMP_MAX_ATTACHMENT_BYTES", 25 * 1024 * 1024),
        attachment_fetch_seconds=_float("GMP_ATTACHMENT_FETCH_SECONDS", 30.0),
        payload_bucket=os.environ.get("PAYLOAD_BUCKET", "").strip(),
        attachment_s3_prefix=os.environ.get("GMP_ATTACHMENT_S3_PREFIX", "").strip(),
        attachment_reader_role_arn=os.environ.get("ATTACHMENT_READER_ROLE_ARN", "").strip(),
    )


def local_metrics_token() -> str:
    """METRICS_TOKEN, the /metrics token of a local stack ("": none). Read at each call, not cached: a
    local stack's token may change while it runs; on AWS the token is a secret (`metrics_token_secret_arn`)."""
    return os.environ.get("METRICS_TOKEN", "").strip()


class LoggingSettings(NamedTuple):
    """How the package logs: LOG_LEVEL, LOG_FORMAT (`json` or `text`), POWERTOOLS_SERVICE_NAME."""

    level: str
    format: str
    service: str


def logging_settings() -> LoggingSettings:
    """The logging settings, read at each call: the local stack and tests switch them while a process lives."""
    return LoggingSettings(
        level=os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO",
        format=os.environ.get("LOG_FORMAT", "json").strip().lower(),
        service=os.environ.get("POWERTOOLS_SERVICE_NAME", "").strip() or "mail-proxy",
    )


class LargeFileSettings(NamedTuple):
    """Large attachments turned into download links (docs/large-files.md): where the files go, how links and
    uploads are signed, where links point. Apart from `Settings`: only the sender and the file routes read them."""

    bucket: str  # LARGE_FILE_BUCKET: the stack's bucket of large files ("": files in GMP_DATA_DIR)
    signing_secret_arn: str  # LINK_SIGNING_SECRET_ARN: the Secrets Manager secret links are signed with
    signing_key: str  # GMP_LINK_SIGNING_KEY: the signing material itself (a local stack, tests)
    public_base_url: str  # GMP_PUBLIC_BASE_URL: where the service's download route is reached
    upload_max_bytes: int  # GMP_LARGE_FILE_UPLOAD_MAX_BYTES: the size limit of one upload
    upload_seconds: int  # GMP_LARGE_FILE_UPLOAD_SECONDS: how long an upload form is valid
    redirect_seconds: int  # GMP_LARGE_FILE_REDIRECT_SECONDS: life of the presigned URL a download redirects to

    def __repr__(self) -> str:
        shown = (f"{n}={v!r}" for n, v in zip(self._fields, self, strict=True) if n != "signing_key")
        return f"LargeFileSettings({', '.join(shown)})"


@functools.cache
def get_large_file_settings() -> LargeFileSettings:
    """The large-file settings of this process, read once; `cache_clear()` re-reads them."""
    return LargeFileSettings(
        bucket=os.environ.get("LARGE_FILE_BUCKET", "").strip(),
        signing_secret_arn=os.environ.get("LINK_SIGNING_SECRET_ARN", "").strip(),
        signing_key=os.environ.get("GMP_LINK_SIGNING_KEY", "").strip(),
        public_base_url=os.environ.get("GMP_PUBLIC_BASE_URL", "").strip().rstrip("/"),
        upload_max_bytes=_positive("GMP_LARGE_FILE_UPLOAD_MAX_BYTES", 100 * 1024 * 1024),
        upload_seconds=_positive("GMP_LARGE_FILE_UPLOAD_SECONDS", 3600),
        redirect_seconds=_positive("GMP_LARGE_FILE_REDIRECT_SECONDS", 300),
    )
