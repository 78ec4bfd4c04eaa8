"""Fixtures shared by every tier: the template's AWS resources in moto, the API app, tenants and accounts.

`aws_env` creates what `template.yaml` declares (tables, queues, bucket, KMS key) with the local stack's
own emulator, run in-process under `moto.mock_aws()` instead of moto's server, so tests need no port
and every test starts from empty tables and queues.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import moto
import pytest
from fastapi.testclient import TestClient

from local.emulator import InProcessEmulator
from local.environment import EnvironmentPatch
from local.template import Template

ADMIN_TOKEN = "test-admin-token-0123456789abcdefghijklmnopqrstuvwxyz"
REGION = "us-east-1"
QUEUE_VARIABLES = ("IMMEDIATE_QUEUE_URL", "HIGH_QUEUE_URL", "MEDIUM_QUEUE_URL", "LOW_QUEUE_URL")


class MonkeypatchedEnvironment(EnvironmentPatch):
    """The emulator's environment changes, made through pytest's monkeypatch so they are undone with it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self._monkeypatch = monkeypatch

    def set(self, key: str, value: str) -> None:
        """Set `key` until the test ends."""
        self._monkeypatch.setenv(key, value)

    def unset(self, key: str) -> None:
        """Remove `key` until the test ends."""
        self._monkeypatch.delenv(key, raising=False)

    def restore(self) -> None:
        """Nothing to do: monkeypatch undoes the changes."""


@functools.cache
def _shared_loader(data_path: str | None) -> Any:
    from botocore.loaders import create_loader

    return create_loader(data_path)


@pytest.fixture(scope="session", autouse=True)
def _shared_botocore_models() -> Iterator[None]:
    """Share botocore's model loader between sessions: each test's fresh clients then skip re-reading JSON models."""
    import botocore.session

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", _shared_loader)
        try:
            import moto.kms.models as kms_models

            # moto makes an RSA key for every KMS key, even symmetric ones: one per run is enough here.
            generate = getattr(kms_models, "generate_private_key")  # noqa: B009 - moto does not export it
            patch.setattr(kms_models, "generate_private_key", functools.cache(generate))
        except (ImportError, AttributeError):
            pass
        yield


# The loopback SMTP and HTTP servers of the tests are internal destinations the outbound guard refuses
# unless an operator allows them, as `make run` does; a test of the guard itself sets its own list.
TEST_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"


@pytest.fixture(autouse=True)
def _loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test may reach loopback servers (GMP_ALLOWED_NETWORKS), as under `make run`."""
    from mailproxy.settings import get_outbound_settings

    monkeypatch.setenv("GMP_ALLOWED_NETWORKS", TEST_ALLOWED_NETWORKS)
    get_outbound_settings.cache_clear()
    yield
    get_outbound_settings.cache_clear()


@functools.cache
def _template() -> Template:
    return Template.load()


def _clear_caches() -> None:
    import mailproxy.adapters.aws.rates
    import mailproxy.adapters.aws.sealer
    import mailproxy.adapters.aws.sessions
    import mailproxy.aws
    import mailproxy.secret_cache
    import mailproxy.settings
    import mailproxy.stores

    mailproxy.aws.reset_clients()
    mailproxy.settings.get_settings.cache_clear()
    mailproxy.settings.get_outbound_settings.cache_clear()
    mailproxy.settings.get_large_file_settings.cache_clear()
    mailproxy.adapters.aws.sealer.decrypt_secret.cache_clear()
    mailproxy.adapters.aws.rates.forget_cache()
    mailproxy.adapters.aws.sessions.forget_cache()
    mailproxy.stores.reset()
    mailproxy.secret_cache.secrets.cache_clear()


class AwsEnv(dict[str, str]):
    """The resources' environment variables (a dict), with helpers to look at what the service stored."""

    def __init__(self, env: dict[str, str], emulator: InProcessEmulator) -> None:
        super().__init__(env)
        self.emulator = emulator

    def client(self, service: str) -> Any:
        """A boto3 client of the mocked account."""
        return self.emulator.client(service)

    def stored_payloads(self) -> set[tuple[str, str]]:
        """(tenant_id, id) of every payload the service holds: pinned items and what its packs contain."""
        import json
        import zlib

        held = {(str(i["tenant_id"]), str(i["id"])) for i in self.table_items("PAYLOADS_TABLE")}
        s3 = self.client("s3")
        listed = s3.list_objects_v2(Bucket=self["PAYLOAD_BUCKET"], Prefix="payloads/packs/").get("Contents", [])
        for obj in listed:
            tenant_id = obj["Key"].split("/")[2]
            body = s3.get_object(Bucket=self["PAYLOAD_BUCKET"], Key=obj["Key"])["Body"].read()
            held |= {(tenant_id, message_id) for message_id in json.loads(zlib.decompress(body))}
        return held

    def table_items(self, variable: str) -> list[dict[str, Any]]:
        """Every item of the table named by `variable` (`MESSAGES_TABLE`...), as plain Python values."""
        from mailproxy.adapters.aws.dynamo import from_item

        ddb = self.client("dynamodb")
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self[variable], "ConsistentRead": True}
        while True:
            reply = ddb.scan(**kwargs)
            items += [from_item(i) for i in reply.get("Items", [])]
            if "LastEvaluatedKey" not in reply:
                return items
            kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def raw_table_dump(self, variable: str) -> str:
        """The whole table as the text of its scan (to assert a secret appears nowhere in it)."""
        reply = self.client("dynamodb").scan(TableName=self[variable], ConsistentRead=True)
        return json.dumps(
            reply.get("Items", []), default=lambda b: b.decode("latin-1") if isinstance(b, bytes) else str(b)
        )

    def queue_url(self, priority: int) -> str:
        """The URL of the queue of a priority 0..3."""
        return self[QUEUE_VARIABLES[priority]]

    def queue_depth(self, priority: int) -> dict[str, int]:
        """Visible and delayed message counts of a priority's queue."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url(priority),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return {
            "visible": int(attributes["ApproximateNumberOfMessages"]),
            "delayed": int(attributes["ApproximateNumberOfMessagesDelayed"]),
        }

    def queued_total(self) -> int:
        """Messages on every priority queue, visible or delayed."""
        return sum(sum(self.queue_depth(p).values()) for p in range(4))

    def drain(self, priority: int) -> list[dict[str, Any]]:
        """Receive and delete every visible message of a priority's queue: their JSON bodies."""
        sqs = self.client("sqs")
        bodies: list[dict[str, Any]] = []
        while True:
            reply = sqs.receive_message(QueueUrl=self.queue_url(priority), MaxNumberOfMessages=10)
            received = reply.get("Messages", [])
            if not received:
                return bodies
            for message in received:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url(priority), ReceiptHandle=message["ReceiptHandle"])

    def drain_all(self) -> dict[int, list[dict[str, Any]]]:
        """Every visible message of every priority queue, by priority (received and deleted)."""
        return {p: self.drain(p) for p in range(4)}

    def finish_message(self, tenant_id: str, message_id: str, status: str = "sent") -> None:
        """Mark a pending message sent (or failed) as the sender would: its status, and one pending less."""
        self.set_message_status(tenant_id, message_id, status)
        self.client("dynamodb").update_item(
            TableName=self["STATE_TABLE"],
            Key={"pk": {"S": "PENDING"}, "sk": {"S": tenant_id}},
            UpdateExpression="ADD n :d",
            ExpressionAttributeValues={":d": {"N": "-1"}},
        )

    def set_message_status(self, tenant_id: str, message_id: str, status: str) -> None:
        """Change a message's status in `MessagesTable` as the sender would (e.g. to `sent`)."""
        self.client("dynamodb").update_item(
            TableName=self["MESSAGES_TABLE"],
            Key={"tenant_id": {"S": tenant_id}, "id": {"S": message_id}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}},
        )


@contextlib.contextmanager
def _aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEnv]:
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "ADMIN_TOKEN_SECRET_ARN",
        "METRICS_TOKEN_SECRET_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("GMP_API_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    _clear_caches()
    try:
        with moto.mock_aws():
            emulator = InProcessEmulator(_template(), environment=MonkeypatchedEnvironment(monkeypatch))
            env = emulator.start()
            yield AwsEnv(env, emulator)
            emulator.stop()
    finally:
        _clear_caches()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEnv]:
    """Every resource of template.yaml in a fresh moto account; the functions' env vars set; caches cleared."""
    with _aws(monkeypatch) as env:
        yield env


@pytest.fixture(scope="module")
def module_aws_env() -> Iterator[AwsEnv]:
    """`aws_env` shared by one module's tests (for property-based runs that make many calls)."""
    with pytest.MonkeyPatch.context() as monkeypatch, _aws(monkeypatch) as env:
        yield env


# ---------------------------------------------------------------------- the storage a test runs on

AWS_ENV_SKIP = "looks at AWS resources (requests aws_env): AWS only"


def pytest_configure(config: pytest.Config) -> None:
    """The markers of the storage parametrization."""
    config.addinivalue_line(
        "markers", "both_storages: run each test on AWS (moto) and on SQLite, through the `storage` fixture"
    )
    config.addinivalue_line("markers", "aws_only(reason): of a both_storages module, runs on AWS only (say why)")
    config.addinivalue_line("markers", "sqlite_only(reason): the SQLite twin of an AWS-only test (name it)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`storage` takes both values in a both_storages test; SQLite is skipped where the test is AWS-only."""
    if "storage" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("both_storages") is None:
        return
    aws_only = metafunc.definition.get_closest_marker("aws_only")
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only")
    reason = aws_only.args[0] if aws_only else AWS_ENV_SKIP if "aws_env" in metafunc.fixturenames else ""
    sqlite = pytest.param("sqlite", marks=pytest.mark.skip(reason=reason)) if reason else "sqlite"
    aws = pytest.param("aws", marks=pytest.mark.skip(reason=sqlite_only.args[0])) if sqlite_only else "aws"
    metafunc.parametrize("storage", [aws, sqlite], indirect=True)


class SqliteEnv:
    """The SQLite storage of a test: one fresh database under `data_dir`."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir

    def raw_dump(self) -> bytes:
        """The bytes of the database's files (the WAL too), to assert a secret appears nowhere in them."""
        import pathlib

        return b"".join(p.read_bytes() for p in sorted(pathlib.Path(self.data_dir).glob("*.sqlite3*")))


Storage = AwsEnv | SqliteEnv


@pytest.fixture
def storage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Storage]:
    """Where the service keeps its data: `aws_env` (the default), or SQLite in a both_storages module."""
    if getattr(request, "param", "aws") == "aws":
        yield request.getfixturevalue("aws_env")
        return
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "ADMIN_TOKEN_SECRET_ARN", "METRICS_TOKEN_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    # No AWS here: a client asked for fails the test, and one made another way finds no account.
    for name, value in {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
        "GMP_STORAGE": "sqlite",
        "GMP_DATA_DIR": str(tmp_path / "data"),
        "GMP_API_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    import mailproxy.aws

    reached: list[str] = []

    def no_aws(service: str, *args: Any, **kwargs: Any) -> Any:
        reached.append(service)
        raise RuntimeError(f"the SQLite storage reached AWS ({service})")

    setattr(no_aws, "cache_clear", lambda: None)  # noqa: B010 - reset_clients clears it as the cached client
    monkeypatch.setattr(mailproxy.aws, "client", no_aws)
    monkeypatch.setattr(mailproxy.aws, "scoped_client", no_aws)
    _clear_caches()
    try:
        yield SqliteEnv(str(tmp_path / "data"))
    finally:
        _clear_caches()
    assert not reached, f"AWS clients asked for on SQLite: {reached}"


@pytest.fixture(scope="session")
def intake_app() -> Any:
    """The IntakeFunction's FastAPI app, imported as Lambda imports it."""
    from functions.intake.app import app

    return app


@pytest.fixture
def api(storage: Storage, intake_app: Any) -> Iterator[TestClient]:
    """An HTTP client of the intake API backed by `storage`."""
    with TestClient(intake_app) as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    """The admin token header."""
    return {"X-API-Token": ADMIN_TOKEN}


TenantFactory = Callable[..., tuple[str, dict[str, str]]]
AccountFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_tenant(api: TestClient, admin: dict[str, str]) -> TenantFactory:
    """Create a tenant through the API: returns (tenant_id, its key header)."""
    counter = iter(range(1, 1_000_000))

    def make(tenant_id: str | None = None, **fields: Any) -> tuple[str, dict[str, str]]:
        tenant_id = tenant_id or f"tenant-{next(counter)}"
        reply = api.post("/tenant", json={"id": tenant_id, "name": f"Tenant {tenant_id}", **fields}, headers=admin)
        assert reply.status_code == 200, reply.text
        return tenant_id, {"X-API-Token": reply.json()["api_key"]}

    return make


@pytest.fixture
def make_account(api: TestClient, admin: dict[str, str]) -> AccountFactory:
    """Create an SMTP account of a tenant through the API: returns the body sent."""

    def make(tenant_id: str, account_id: str = "smtp", **fields: Any) -> dict[str, Any]:
        body = {"id": account_id, "tenant_id": tenant_id, "host": "smtp.example.test", "port": 587, **fields}
        reply = api.post("/account", json=body, headers=admin)
        assert reply.status_code == 200, reply.text
        return body

    return make


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Any]:
    """A Dovecot IMAP server on 127.0.0.1 for the whole session (tests/imap_server.py); each test adds its user."""
    import pathlib
    import shutil
    import tempfile

    from tests.imap_server import DovecotServer

    # Not under pytest's own temporary folder: it is private to us (0700), and Dovecot's users must read theirs.
    root = pathlib.Path(tempfile.mkdtemp(prefix="gmp-dovecot-"))
    try:
        server = DovecotServer(root).start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot_tls() -> Iterator[Any]:
    """A Dovecot offering STARTTLS on `port` and implicit TLS on `tls_port`, with a self-signed certificate."""
    import pathlib
    import shutil
    import tempfile

    from tests.imap_server import DovecotServer
    from tests.integration.smtp_servers import make_self_signed_cert

    root = pathlib.Path(tempfile.mkdtemp(prefix="gmp-dovecot-tls-"))
    root.chmod(0o755)  # Dovecot's users go through it to their mailboxes
    try:
        cert = make_self_signed_cert(root)
        server = DovecotServer(root / "server", cert=cert.cert_path, key=cert.key_path).start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
