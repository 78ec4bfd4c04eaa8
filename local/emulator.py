"""The AWS emulator: moto's server (or the user's AWS_ENDPOINT_URL) holding the template's resources."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from botocore.exceptions import ClientError

from local.environment import EnvironmentPatch
from local.lambda_runtime import LOCAL_ACCOUNT_ID, LOCAL_REGION
from local.template import NO_VALUE, PhysicalResource, Resolver, Template, Unresolvable

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "gmp-local"


# CloudFormation properties of AWS::SQS::Queue that are SQS queue attributes of the same name.
_QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)
# CloudFormation-only keys of a secondary index that CreateTable does not accept.
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")


# Account ids of the embedded moto servers of this process: the first gets moto's default one.
_account_ids = itertools.count(int(LOCAL_ACCOUNT_ID))


def _local_moto_app(app: Any, account_id: str) -> Any:
    """Wrap moto's WSGI app: every request in `account_id`, DynamoDB requests one at a time."""
    lock = threading.Lock()

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        # moto keeps its state per process: an account per server keeps stacks of one test run apart.
        environ.setdefault("HTTP_X_MOTO_ACCOUNT_ID", account_id)
        # DynamoDB applies each conditional write atomically; moto checks and writes without a lock, so
        # two concurrent claims could both succeed. Other services stay concurrent (SQS long polls block).
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return application


def _moto_server(host: str, port: int, account_id: str) -> Any:
    """moto's ThreadedMotoServer answering in `account_id`, with DynamoDB requests serialised."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class AtomicDynamoDBMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            # Same as moto 5.2's, with the app wrapped (relies on its private attributes; moto is pinned).
            app = _local_moto_app(DomainDispatcherApplication(create_backend_app), account_id)
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return AtomicDynamoDBMotoServer(ip_address=host, port=port, verbose=False)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _env_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


class Emulator:
    """Starts moto (unless AWS_ENDPOINT_URL names another emulator) and creates the template's resources."""

    def __init__(
        self,
        template: Template,
        *,
        moto_port: int | None = None,
        endpoint_url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        host: str = "127.0.0.1",
        environment: EnvironmentPatch | None = None,
    ) -> None:
        self.template = template
        self.prefix = prefix
        self.host = host
        self.environment_patch = environment or EnvironmentPatch()
        self._own_patch = environment is None
        self._requested_port = moto_port
        self._requested_endpoint = endpoint_url
        self._moto: Any = None
        self._clients: dict[str, Any] = {}
        self.endpoint_url = ""
        self.region = LOCAL_REGION
        self.account_id = LOCAL_ACCOUNT_ID
        self.resources: dict[str, PhysicalResource] = {}
        self.resolver = Resolver(template, self.resources, region=self.region, stack_name=prefix)
        self.environment: dict[str, str] = {}
        self.settings_environment: dict[str, str] = {}

    @property
    def uses_moto(self) -> bool:
        """True when this process runs the emulator (moto), False for a user-given endpoint."""
        return self._moto is not None

    @property
    def description(self) -> str:
        """What answers which service, for the banner."""
        if not self.uses_moto:
            return "from AWS_ENDPOINT_URL"
        return "moto, in memory: gone at exit"

    def start(self) -> dict[str, str]:
        """Start or join the emulator, create every resource, set and return the resource env vars."""
        self._connect()
        self._create_resources()
        self.environment, self.settings_environment = self._function_environment()
        for key, value in self.environment.items():
            self.environment_patch.set(key, value)
        for key, value in self.settings_environment.items():
            self.environment_patch.setdefault(key, value)
        return dict(self.environment)

    def stop(self) -> None:
        """Stop moto if this process started it (the resources go with it)."""
        self._clients.clear()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._own_patch:
            self.environment_patch.restore()

    def client(self, service: str) -> Any:
        """A boto3 client of `service` pointed at the emulator (one per service; clients are thread-safe)."""
        if service not in self._clients:
            self._clients[service] = boto3.session.Session().client(  # type: ignore[call-overload]
                service, endpoint_url=self.endpoint_url, region_name=self.region
            )
        return self._clients[service]

    # ------------------------------------------------------------------ emulator

    def _connect(self) -> None:
        patch = self.environment_patch
        # None: the user's AWS_ENDPOINT_URL if set; "" (tests): always moto; a URL: that emulator.
        if self._requested_endpoint is None:
            user_endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip()
        else:
            user_endpoint = self._requested_endpoint.strip()
        if user_endpoint:
            # The user's emulator (e.g. LocalStack) keeps its own region and credentials if they are set.
            self.endpoint_url = user_endpoint
            self.region = patch.setdefault("AWS_DEFAULT_REGION", LOCAL_REGION)
            patch.setdefault("AWS_REGION", self.region)
            patch.setdefault("AWS_ACCESS_KEY_ID", "test")
            patch.setdefault("AWS_SECRET_ACCESS_KEY", "test")
            patch.set("AWS_ENDPOINT_URL", user_endpoint)
            logger.info("AWS emulator: %s (from AWS_ENDPOINT_URL)", user_endpoint)
        else:
            port = self._requested_port
            if port is None:
                port = int(os.environ.get("GMP_MOTO_PORT", "0") or 0)
            # moto's embedded werkzeug logs every request at INFO: noise next to the service's own logs.
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            self.account_id = f"{next(_account_ids):012d}"
            self._moto = _moto_server(self.host, port, self.account_id)
            self._moto.start()
            host, bound_port = self._moto.get_host_and_port()
            self.endpoint_url = f"http://{host}:{bound_port}"
            self.region = LOCAL_REGION
            patch.set("AWS_ENDPOINT_URL", self.endpoint_url)
            # Fake credentials, and no profile lookup: nothing can reach a real AWS account by mistake.
            patch.set("AWS_ACCESS_KEY_ID", "testing")
            patch.set("AWS_SECRET_ACCESS_KEY", "testing")
            patch.unset("AWS_SESSION_TOKEN")
            patch.unset("AWS_PROFILE")
            patch.set("AWS_DEFAULT_REGION", self.region)
            patch.set("AWS_REGION", self.region)
            logger.info("AWS emulator: moto on %s", self.endpoint_url)
        self.resolver.region = self.region
        self.resolver.account_id = self.account_id

    # ------------------------------------------------------------------ resources

    def _create_resources(self) -> None:
        creators: dict[str, Callable[[str, Mapping[str, Any]], PhysicalResource | None]] = {
            "AWS::SQS::Queue": self._create_queue,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::KMS::Key": self._create_key,
            "AWS::KMS::Alias": self._create_alias,
            "AWS::SecretsManager::Secret": self._skip_secret,
        }
        pending: list[tuple[str, str, Mapping[str, Any]]] = []
        for resource_type in creators:
            for logical_id, properties in self.template.resources_of_type(resource_type, self.resolver).items():
                pending.append((logical_id, resource_type, properties))
        # A resource whose properties name one not created yet (a queue's DLQ) waits for the next pass.
        while pending:
            deferred: list[tuple[str, str, Mapping[str, Any]]] = []
            reasons: dict[str, str] = {}
            for logical_id, resource_type, properties in pending:
                try:
                    created = creators[resource_type](logical_id, properties)
                except Unresolvable as exc:
                    deferred.append((logical_id, resource_type, properties))
                    reasons[logical_id] = str(exc)
                    continue
                if created is not None:
                    self.resources[logical_id] = created
            if len(deferred) == len(pending):
                raise RuntimeError(f"cannot create {sorted(reasons)} locally: {reasons}")
            pending = deferred

    def local_name(self, logical_id: str) -> str:
        """The local physical name of a resource (`gmp-local-MessagesTable`)."""
        return f"{self.prefix}-{logical_id}"

    def _create_table(self, logical_id: str, properties: Mapping[str, Any]) -> PhysicalResource:
        props = self.resolver.resolve(properties)
        name = self.local_name(logical_id)
        billing_mode = props.get("BillingMode", "PROVISIONED")
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": billing_mode,
        }
        if billing_mode == "PROVISIONED":
            request["ProvisionedThroughput"] = props.get(
                "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
            )
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if props.get(key):
                request[key] = [
                    {
                        field: value
                        for field, value in index.items()
                        if field in _INDEX_KEYS
                        and not (field == "ProvisionedThroughput" and billing_mode == "PAY_PER_REQUEST")
                    }
                    for index in props[key]
                ]
        stream = props.get("StreamSpecification")
        if stream:
            request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
        if props.get("TableClass"):
            request["TableClass"] = props["TableClass"]

        dynamodb = self.client("dynamodb")
        try:
            dynamodb.create_table(**request)
            logger.debug("created table %s", name)
        except ClientError as exc:
            if _error_code(exc) != "ResourceInUseException":
                raise
            self._check_existing_table(dynamodb, name, request)
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

        ttl = props.get("TimeToLiveSpecification")
        if ttl and str(ttl.get("Enabled", False)).lower() == "true":
            current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )

        table = dynamodb.describe_table(TableName=name)["Table"]
        attributes = {"Arn": table["TableArn"]}
        if table.get("LatestStreamArn"):
            attributes["StreamArn"] = table["LatestStreamArn"]
        return PhysicalResource(logical_id, "AWS::DynamoDB::Table", name, attributes)

    def _check_existing_table(self, dynamodb: Any, name: str, request: Mapping[str, Any]) -> None:
        table = dynamodb.describe_table(TableName=name)["Table"]
        existing_indexes = sorted(index["IndexName"] for index in table.get("GlobalSecondaryIndexes", []))
        wanted_indexes = sorted(index["IndexName"] for index in request.get("GlobalSecondaryIndexes", []))
        if table["KeySchema"] != request["KeySchema"] or existing_indexes != wanted_indexes:
            # A persistent emulator may hold a table from an older template: say so rather than misbehave later.
            logger.warning(
                "table %s already exists with another key schema or indexes than template.yaml: "
                "delete it in the emulator to have it recreated",
                name,
            )

    def _create_queue(self, logical_id: str, properties: Mapping[str, Any]) -> PhysicalResource:
        props = self.resolver.resolve(properties)
        fifo = str(props.get("FifoQueue", False)).lower() == "true"
        name = self.local_name(logical_id) + (".fifo" if fifo else "")
        attributes: dict[str, str] = {}
        for key in _QUEUE_ATTRIBUTES:
            if key not in props:
                continue
            value = props[key]
            attributes[key] = json.dumps(value) if isinstance(value, Mapping) else _env_string(value)

        sqs = self.client("sqs")
        try:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except ClientError as exc:
            if _error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            # The queue exists with other attributes: bring it to what the template says.
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attributes.pop("FifoQueue", None)
            if attributes:
                sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return PhysicalResource(logical_id, "AWS::SQS::Queue", url, {"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _create_bucket(self, logical_id: str, properties: Mapping[str, Any]) -> PhysicalResource:
        # Bucket names are lowercase and global to the emulator: a stack in another account of the same moto
        # (a second stack in one test process) names its own. Policies, lifecycle and encryption are
        # AWS-side concerns, not applied here.
        name = self.local_name(logical_id).lower()
        if self.account_id != LOCAL_ACCOUNT_ID:
            name = f"{self.prefix}-{self.account_id}-{logical_id}".lower()
        s3 = self.client("s3")
        request: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            s3.create_bucket(**request)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise
        return PhysicalResource(
            logical_id,
            "AWS::S3::Bucket",
            name,
            {
                "Arn": f"arn:aws:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
            },
        )

    def _create_key(self, logical_id: str, properties: Mapping[str, Any]) -> PhysicalResource:
        props = self.resolver.resolve(properties)
        kms = self.client("kms")
        # An alias of our own finds the key again in a persistent emulator (keys have no names).
        own_alias = f"alias/{self.prefix}/{logical_id}"
        try:
            metadata = kms.describe_key(KeyId=own_alias)["KeyMetadata"]
        except ClientError as exc:
            if _error_code(exc) != "NotFoundException":
                raise
            request = {key: props[key] for key in ("Description", "KeyUsage", "KeySpec", "MultiRegion") if key in props}
            metadata = kms.create_key(**request)["KeyMetadata"]
            kms.create_alias(AliasName=own_alias, TargetKeyId=metadata["KeyId"])
            if str(props.get("EnableKeyRotation", False)).lower() == "true":
                try:
                    kms.enable_key_rotation(KeyId=metadata["KeyId"])
                except ClientError:
                    logger.debug("emulator does not rotate keys", exc_info=True)
        return PhysicalResource(
            logical_id, "AWS::KMS::Key", metadata["KeyId"], {"Arn": metadata["Arn"], "KeyId": metadata["KeyId"]}
        )

    def _create_alias(self, logical_id: str, properties: Mapping[str, Any]) -> PhysicalResource:
        props = self.resolver.resolve(properties)
        kms = self.client("kms")
        alias, target = str(props["AliasName"]), str(props["TargetKeyId"])
        try:
            kms.create_alias(AliasName=alias, TargetKeyId=target)
        except ClientError as exc:
            if _error_code(exc) != "AlreadyExistsException":
                raise
            kms.update_alias(AliasName=alias, TargetKeyId=target)
        return PhysicalResource(logical_id, "AWS::KMS::Alias", alias, {})

    def _skip_secret(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        # The admin token is GMP_API_TOKEN; /metrics is open unless METRICS_TOKEN is set.
        logger.info("%s is not created locally (GMP_API_TOKEN, METRICS_TOKEN stand for the secrets)", logical_id)
        return None

    # ------------------------------------------------------------------ environment

    def _function_environment(self) -> tuple[dict[str, str], dict[str, str]]:
        """Env vars of the template's functions: (those naming local resources, the other settings)."""
        resource_vars: dict[str, str] = {}
        setting_vars: dict[str, str] = {}
        for function in self.template.functions(self.resolver):
            for name, raw in function.environment.items():
                try:
                    value = self.resolver.resolve(raw)
                except Unresolvable as exc:
                    logger.debug("%s of %s is not set locally: %s", name, function.logical_id, exc)
                    continue
                if value is NO_VALUE:
                    continue
                target = resource_vars if self.resolver.referenced_resources(raw) else setting_vars
                text = _env_string(value)
                if target.get(name, text) != text:
                    # One process holds every function's environment: the first definition wins.
                    logger.warning("%s differs between functions; locally it is %r", name, target[name])
                    continue
                target[name] = text
        return resource_vars, setting_vars


@functools.cache
def _in_process_session(region: str) -> Any:
    # One session for every InProcessEmulator: botocore then loads each service model once.
    return boto3.session.Session(region_name=region)


class InProcessEmulator(Emulator):
    """The emulator against `moto.mock_aws()` in this process (tests, benchmarks): no server, no port.

    DynamoDB calls are serialised while it runs, as the moto server's are: DynamoDB applies each write
    and transaction atomically, in-process moto checks a condition and then writes without a lock.
    """

    _original_call_action: Any = None

    def start(self) -> dict[str, str]:
        """Serialise moto's DynamoDB calls, then create the resources."""
        from moto.dynamodb.responses import DynamoHandler

        if InProcessEmulator._original_call_action is None:
            original = DynamoHandler.call_action
            lock = threading.RLock()

            def call_action(handler: Any) -> Any:
                with lock:
                    return original(handler)

            InProcessEmulator._original_call_action = original
            DynamoHandler.call_action = call_action  # type: ignore[method-assign]
        return super().start()

    def stop(self) -> None:
        """Drop the resources and give moto back its own DynamoDB dispatch."""
        super().stop()
        if InProcessEmulator._original_call_action is not None:
            from moto.dynamodb.responses import DynamoHandler

            DynamoHandler.call_action = InProcessEmulator._original_call_action  # type: ignore[method-assign]
            InProcessEmulator._original_call_action = None

    def _connect(self) -> None:
        self.endpoint_url = ""
        self.region = LOCAL_REGION
        self.resolver.region = LOCAL_REGION

    def client(self, service: str) -> Any:
        """A boto3 client without an endpoint override, so moto's in-process mock answers it."""
        if service not in self._clients:
            self._clients[service] = _in_process_session(self.region).client(service)  # type: ignore[call-overload]
        return self._clients[service]
