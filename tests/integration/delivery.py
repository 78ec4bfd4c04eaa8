"""A harness for delivery tests: the real sender and scheduler over either storage.

On AWS, the sender and scheduler Lambda handlers over the emulated queues and tables (an SQS event-source
player); on SQLite, the same use cases over the adapter's leased work queue, as the one-machine runtime's
workers run them. Everything else (submitting, reading records, /status, counters) is the same on both.
"""

from __future__ import annotations

import abc
import email
import email.policy
import json
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from mailproxy.adapters.sqlite.db import Database, dumps, loads
from mailproxy.adapters.sqlite.messages import SqliteMessages
from mailproxy.adapters.sqlite.queue import MAX_RECEIVES, SqliteQueue

from local.pollers import SqsPoller
from tests.conftest import QUEUE_VARIABLES, AwsEnv, SqliteEnv, Storage

EVENTS = Path(__file__).resolve().parents[2] / "events"


def sender_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The SenderFunction's handler, imported as Lambda imports it."""
    from functions.sender.app import handler

    result: dict[str, Any] = handler(event, context)
    return result


def scheduler_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """The SchedulerFunction's handler."""
    from functions.scheduler.app import handler

    result: dict[str, int] = handler(event, context)
    return result


class Runner(abc.ABC):
    """What differs between the storages: how queued work reaches the sender and the scheduler, and how a
    test reaches into the queues and the stored records (as time passing or another worker would)."""

    @abc.abstractmethod
    def pump_once(self) -> int:
        """Deliver at most one batch of visible queue entries; its size."""

    @abc.abstractmethod
    def scheduler(self) -> dict[str, int]:
        """One scheduler round."""

    @abc.abstractmethod
    def age_message(self, tenant_id: str, message_id: str, seconds: int) -> None:
        """Move a message's schedule `seconds` into the past."""

    @abc.abstractmethod
    def finish_message(self, tenant_id: str, message_id: str, status: str = "sent") -> None:
        """Mark a pending message sent (or failed) as the sender would: its status, and one pending less."""

    @abc.abstractmethod
    def drain(self, priority: int) -> list[dict[str, Any]]:
        """Take every visible entry off a priority's queue: their bodies."""

    @abc.abstractmethod
    def put(self, priority: int, body: dict[str, Any]) -> None:
        """Put a body on a priority's queue (a duplicate, a redelivery)."""

    @abc.abstractmethod
    def queue_depth(self, priority: int) -> dict[str, int]:
        """Visible and delayed entries of a priority's queue (leased ones are neither)."""

    @abc.abstractmethod
    def raw_text(self) -> str:
        """Where tenants, accounts and keys are stored, as raw text (to assert a secret appears nowhere in it)."""

    @abc.abstractmethod
    def dead_letter(self, body: str) -> None:
        """Put a message on the dead-letter queue (one the queue gave up on)."""

    @abc.abstractmethod
    def stored(self, tenant_id: str | None = None) -> dict[str, list[str]]:
        """What the storage holds (of one tenant), as sorted texts: "tenants" (tenants, accounts, keys),
        "messages", "payloads" and "state" (the rest but the command log, of that tenant)."""

    def drain_all(self) -> dict[int, list[dict[str, Any]]]:
        """Every visible entry of every priority's queue, by priority (taken off)."""
        return {p: self.drain(p) for p in range(4)}

    def queued_total(self) -> int:
        """Entries on every priority queue, visible or delayed."""
        return sum(sum(self.queue_depth(p).values()) for p in range(4))


@dataclass
class AwsRunner(Runner):
    """The Lambda handlers over the emulated queues and tables."""

    env: AwsEnv

    def poller(self) -> SqsPoller:
        """An SQS event-source player over the four priority queues, immediate first."""
        return SqsPoller(
            sender_handler, [self.env[v] for v in QUEUE_VARIABLES], client=self.env.client("sqs"), name="test-sender"
        )

    def pump_once(self) -> int:
        """One batch through the SenderFunction's handler, settled as the event source mapping would."""
        return self.poller().poll_once()

    def scheduler(self) -> dict[str, int]:
        """One scheduler round through its handler (a real EventBridge event shape)."""
        return scheduler_handler(json.loads((EVENTS / "schedule.json").read_text()), None)

    def age_message(self, tenant_id: str, message_id: str, seconds: int) -> None:
        """Rewrite the message's item in MessagesTable."""
        from mailproxy.adapters.aws.dynamo import from_item

        ddb = self.env.client("dynamodb")
        key = {"tenant_id": {"S": tenant_id}, "id": {"S": message_id}}
        item = from_item(ddb.get_item(TableName=self.env["MESSAGES_TABLE"], Key=key)["Item"])
        updates, values = [], {}
        for name in AGED_FIELDS:
            if item.get(name) is not None:
                updates.append(f"{name} = :{name}")
                values[f":{name}"] = {"N": str(int(item[name]) - seconds)}
        if updates:
            ddb.update_item(
                TableName=self.env["MESSAGES_TABLE"],
                Key=key,
                UpdateExpression="SET " + ", ".join(updates),
                ExpressionAttributeValues=values,
            )

    def finish_message(self, tenant_id: str, message_id: str, status: str = "sent") -> None:
        """Update the item in MessagesTable and the PENDING item of StateTable."""
        self.env.finish_message(tenant_id, message_id, status)

    def drain(self, priority: int) -> list[dict[str, Any]]:
        """Receive and delete the queue's visible messages."""
        return self.env.drain(priority)

    def put(self, priority: int, body: dict[str, Any]) -> None:
        """Send a message to the priority's queue."""
        self.env.client("sqs").send_message(QueueUrl=self.env.queue_url(priority), MessageBody=json.dumps(body))

    def queue_depth(self, priority: int) -> dict[str, int]:
        """The queue's approximate counts."""
        return self.env.queue_depth(priority)

    def raw_text(self) -> str:
        """The scans of TenantsTable and StateTable."""
        return self.env.raw_table_dump("TENANTS_TABLE") + self.env.raw_table_dump("STATE_TABLE")

    def dead_letter(self, body: str) -> None:
        """Send it to DeadLetterQueue."""
        self.env.client("sqs").send_message(QueueUrl=self.env["DEAD_LETTER_QUEUE_URL"], MessageBody=body)

    def stored(self, tenant_id: str | None = None) -> dict[str, list[str]]:
        """The tables' items and the payloads S3 holds; StateTable's items keyed by the tenant."""
        env = self.env

        def of(variable: str) -> list[dict[str, Any]]:
            items = env.table_items(variable)
            if tenant_id is None:
                return items
            if variable == "TENANTS_TABLE":
                return [i for i in items if tenant_id in repr(i)]
            return [i for i in items if i.get("tenant_id") == tenant_id]

        state = [i for i in env.table_items("STATE_TABLE") if i["pk"] != "CMDLOG"]
        return {
            "tenants": sorted(map(repr, of("TENANTS_TABLE"))),
            "messages": sorted(map(repr, of("MESSAGES_TABLE"))),
            "payloads": sorted(map(repr, of("PAYLOADS_TABLE")))
            + sorted(map(repr, (k for k in env.stored_payloads() if tenant_id in (None, k[0])))),
            "state": sorted(map(repr, (i for i in state if tenant_id in (None, i.get("sk"))))),
        }


# A received entry stays leased this long, as the queues' VisibilityTimeout in template.yaml.
SQLITE_VISIBILITY_SECONDS = 360


@dataclass
class SqliteRunner(Runner):
    """The sender and scheduler use cases over the SQLite adapter's work queue."""

    env: SqliteEnv

    batch_size = 10  # the sender's event source mappings' BatchSize

    def pump_once(self) -> int:
        """Lease one batch, hand it to the sender, delete what it handled and release its batch item failures
        (back after the visibility timeout, as SQS lets a failed record come back)."""
        from mailproxy.sender import handle_batch

        queue = self._queue()
        records = queue.receive(self.batch_size, SQLITE_VISIBILITY_SECONDS)
        if not records:
            return 0
        try:
            failed = {str(f["itemIdentifier"]) for f in handle_batch(records)["batchItemFailures"]}
        except Exception:
            failed = {str(r["messageId"]) for r in records}  # a crashed invocation: the whole batch comes back
        queue.delete([r["receiptHandle"] for r in records if r["messageId"] not in failed])
        queue.release([r["receiptHandle"] for r in records if r["messageId"] in failed], SQLITE_VISIBILITY_SECONDS)
        return len(records)

    def scheduler(self) -> dict[str, int]:
        """One scheduler round."""
        from mailproxy.scheduler import run_round

        return run_round()

    def age_message(self, tenant_id: str, message_id: str, seconds: int) -> None:
        """Rewrite the message's document (and its parked-index column) in the messages table."""

        with self._messages().db.transaction() as tx:
            [row] = tx.execute("SELECT doc FROM messages WHERE tenant_id = ? AND id = ?", (tenant_id, message_id))
            doc = loads(row["doc"])
            for name in AGED_FIELDS:
                if doc.get(name) is not None:
                    doc[name] = int(doc[name]) - seconds
            tx.execute(
                "UPDATE messages SET doc = ?, park_ts = ? WHERE tenant_id = ? AND id = ?",
                (dumps(doc), doc.get("park_ts"), tenant_id, message_id),
            )

    def finish_message(self, tenant_id: str, message_id: str, status: str = "sent") -> None:
        """Update the message's document and status column; one pending less through the counters port."""
        from mailproxy.stores import stores

        with self._messages().db.transaction() as tx:
            [row] = tx.execute("SELECT doc FROM messages WHERE tenant_id = ? AND id = ?", (tenant_id, message_id))
            doc = {**loads(row["doc"]), "status": status}
            tx.execute(
                "UPDATE messages SET doc = ?, status = ? WHERE tenant_id = ? AND id = ?",
                (dumps(doc), status, tenant_id, message_id),
            )
        stores().counters.add_pending({tenant_id: -1})

    def drain(self, priority: int) -> list[dict[str, Any]]:
        """Delete the priority's visible entries from the queue table, oldest first."""
        queue = self._queue()
        with queue.db.transaction() as tx:
            rows = tx.execute(
                "SELECT seq, body FROM queue_entries WHERE priority = ? AND visible_at <= ? ORDER BY seq",
                (priority, time.time()),
            ).fetchall()
            tx.executemany("DELETE FROM queue_entries WHERE seq = ?", [(r["seq"],) for r in rows])
        return [json.loads(r["body"]) for r in rows]

    def put(self, priority: int, body: dict[str, Any]) -> None:
        """Enqueue the body as the intake would."""
        from mailproxy.queues import QueueEntry

        fields = {k: body[k] for k in ("tenant_id", "id", "rev")}
        self._queue().enqueue([QueueEntry(**fields, priority=priority, payload=body.get("payload"))])

    def queue_depth(self, priority: int) -> dict[str, int]:
        """Counted in the queue table: delayed entries are not visible yet and not leased."""
        [row] = self._queue().db.read(
            "SELECT COALESCE(SUM(visible_at <= :now), 0) AS visible,"
            " COALESCE(SUM(visible_at > :now AND receipt IS NULL), 0) AS delayed"
            " FROM queue_entries WHERE priority = :priority",
            {"now": time.time(), "priority": priority},
        )
        return {"visible": int(row["visible"]), "delayed": int(row["delayed"])}

    def raw_text(self) -> str:
        """The bytes of the database's files, the WAL included (what a copy of the data directory gives away)."""
        return self.env.raw_dump().decode("latin-1")

    def dead_letter(self, body: str) -> None:
        """A row of the queue's dead_letters table, as one received too many times."""
        with self._queue().db.transaction() as tx:
            tx.execute(
                "INSERT INTO dead_letters (message_id, priority, body, sent_at, receives, dead_at)"
                " VALUES (?, 2, ?, ?, ?, ?)",
                (uuid.uuid4().hex, body, time.time(), MAX_RECEIVES, time.time()),
            )

    def stored(self, tenant_id: str | None = None) -> dict[str, list[str]]:
        """The rows of every table that has a `tenant_id` (of that tenant), grouped as on AWS."""
        found: dict[str, list[str]] = {"tenants": [], "messages": [], "payloads": [], "state": []}
        for table, rows in self.tables(tenant_id).items():
            if table not in SQLITE_NOT_STORED:
                found[SQLITE_GROUPS.get(table, "state")] += rows
        return {group: sorted(rows) for group, rows in found.items()}

    def database(self) -> Database:
        """The adapter's database (for a test's own query)."""
        return self._messages().db

    def tables(self, tenant_id: str | None = None) -> dict[str, list[str]]:
        """Table → its rows as text (those of one tenant: by `tenant_id`, or `scope` for run-now requests)."""
        db = self.database()
        found: dict[str, list[str]] = {}
        for table in (str(r["name"]) for r in db.read("SELECT name FROM sqlite_master WHERE type = 'table'")):
            columns = {str(r["name"]) for r in db.read(f"PRAGMA table_info({table})")}
            key = "tenant_id" if "tenant_id" in columns else "scope" if table == "run_now" else None
            if tenant_id is None:
                found[table] = [repr(tuple(r)) for r in db.read(f"SELECT * FROM {table}")]
            elif key is not None:
                found[table] = [repr(tuple(r)) for r in db.read(f"SELECT * FROM {table} WHERE {key} = ?", (tenant_id,))]
        return found

    @staticmethod
    def _messages() -> SqliteMessages:
        from mailproxy.stores import stores

        messages = stores().messages
        assert isinstance(messages, SqliteMessages)
        return messages

    @staticmethod
    def _queue() -> SqliteQueue:
        from mailproxy.stores import stores

        queue = stores().queue
        assert isinstance(queue, SqliteQueue)
        return queue


AGED_FIELDS = ("deferred_ts", "park_ts")
# Which group of `Runner.stored` each SQLite table belongs to ("state" otherwise), and what is not storage
# of the service's data: the audit trail, the change feed (DynamoDB's stream) and the queue (`queued_total`).
SQLITE_GROUPS = {"tenants": "tenants", "tenant_accounts": "tenants", "api_keys": "tenants", "messages": "messages"}
SQLITE_GROUPS["payloads"] = "payloads"
SQLITE_NOT_STORED = {"command_log", "message_changes", "queue_entries", "dead_letters", "sqlite_sequence"}


def runner(storage: Storage) -> Runner:
    """How delivery is driven on `storage`."""
    # By shape, not class: pytest imports tests/conftest.py as `conftest`, this module as `tests.conftest`.
    return AwsRunner(storage) if isinstance(storage, dict) else SqliteRunner(storage)


@dataclass
class Delivery:
    """One tenant with one account pointing at a loopback SMTP server, and ways to drive delivery."""

    env: Storage
    api: TestClient
    admin: dict[str, str]
    tenant_id: str
    key: dict[str, str]

    @property
    def runner(self) -> Runner:
        """How delivery is driven on this storage."""
        return runner(self.env)

    def pump(self, rounds: int = 50) -> int:
        """Deliver batches until the queues have nothing visible; how many records were handled."""
        handled = 0
        for _ in range(rounds):
            count = self.runner.pump_once()
            if count == 0:
                return handled
            handled += count
        return handled

    def scheduler(self) -> dict[str, int]:
        """One scheduler round."""
        return self.runner.scheduler()

    def drain(self, priority: int = 2) -> list[dict[str, Any]]:
        """Take every visible entry off a priority's queue: their bodies (the sender never sees them)."""
        return self.runner.drain(priority)

    def put(self, body: dict[str, Any], priority: int = 2) -> None:
        """Put a queue body (one `drain` returned) on a priority's queue again."""
        self.runner.put(priority, body)

    def queue_depth(self, priority: int = 2) -> dict[str, int]:
        """Visible and delayed entries of a priority's queue."""
        return self.runner.queue_depth(priority)

    def queued_total(self) -> int:
        """Entries on every priority queue, visible or delayed."""
        return self.runner.queued_total()

    def submit(self, *messages: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        """POST messages with the tenant key; the reply body."""
        reply = self.api.post("/commands/add-messages", json={"messages": list(messages)}, headers=self.key)
        assert reply.status_code == expect, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def set_account(self, port: int, **fields: Any) -> None:
        """Replace the tenant's `smtp` account (plain SMTP on 127.0.0.1:port) with these settings."""
        body = {"id": "smtp", "host": "127.0.0.1", "port": port, "use_tls": False, **fields}
        reply = self.api.post("/account", json=body, headers=self.key)
        assert reply.status_code == 200, reply.text

    def records(self) -> dict[str, dict[str, Any]]:
        """id → record, as GET /messages shows them (with history)."""
        reply = self.api.get("/messages", params={"include_history": "true"}, headers=self.key)
        assert reply.status_code == 200, reply.text
        return {r["id"]: r for r in reply.json()["messages"]}

    def pending(self) -> int:
        """The tenant's pending count from /status."""
        reply = self.api.get("/status", headers=self.key)
        return int(reply.json()["pending_messages"])

    def counters(self, account_id: str = "smtp") -> dict[str, int]:
        """The persisted /metrics counters of an account."""
        from mailproxy.stores import stores

        for row in stores().counters.counter_rows():
            if row["tenant_id"] == self.tenant_id and row["account_id"] == account_id:
                return {k: int(row.get(k, 0)) for k in ("sent", "errors", "deferred", "rate_limited")}
        return {"sent": 0, "errors": 0, "deferred": 0, "rate_limited": 0}

    def age_message(self, message_id: str, seconds: int) -> None:
        """Move a message's schedule into the past (as time passing would)."""
        self.runner.age_message(self.tenant_id, message_id, seconds)


def senders_racing(bodies: list[dict[str, Any]], senders: int) -> None:
    """Deliver queue bodies as `senders` sender containers at once: each a thread with its own SMTP pool (so
    its own session-lease holder), all starting together, each giving its sessions back when done. Raises the
    first error a container met."""
    import threading

    from mailproxy import sender, smtp

    from functions.sender.app import handler

    start = threading.Barrier(senders)
    errors: list[BaseException] = []

    def container(batch: list[dict[str, Any]]) -> None:
        try:
            start.wait()
            handler({"Records": [{"messageId": b["id"], "body": json.dumps(b)} for b in batch]}, None)
            sender.release_sessions()
            smtp.reset_pool()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=container, args=(bodies[n::senders],)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]


def container_died() -> None:
    """Forget this thread's SMTP pool as a dead sender container leaves it, once its session leases lapsed
    (tests do not wait the lapse out: tests/integration/test_smtp_sessions.py does, with a moved clock)."""
    from mailproxy import sender, smtp

    sender.release_sessions()
    smtp.reset_pool()


def message(message_id: str, to: str = "alice@example.test", **fields: Any) -> dict[str, Any]:
    """A valid message for the harness's account."""
    return {
        "id": message_id,
        "account_id": "smtp",
        "from": "Acme <noreply@acme.test>",
        "to": [to],
        "subject": f"Subject {message_id}",
        "body": f"Body of {message_id}",
        **fields,
    }


def parsed(content: bytes) -> EmailMessage:
    """A received message parsed back."""
    result: EmailMessage = email.message_from_bytes(content, policy=email.policy.default)  # type: ignore[assignment]
    return result


def mail_ids(received: list[Any]) -> list[str]:
    """The X-Genro-Mail-ID of every received message, in arrival order."""
    return [str(parsed(r.content)["X-Genro-Mail-ID"]) for r in received]
