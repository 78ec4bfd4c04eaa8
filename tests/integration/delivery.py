"""A harness for delivery tests: the real sender and scheduler handlers over moto's queues and tables."""

from __future__ import annotations

import email
import email.policy
import json
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from local.pollers import SqsPoller
from tests.conftest import QUEUE_VARIABLES, AwsEnv

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


@dataclass
class Delivery:
    """One tenant with one account pointing at a loopback SMTP server, and ways to drive delivery."""

    env: AwsEnv
    api: TestClient
    admin: dict[str, str]
    tenant_id: str
    key: dict[str, str]

    def poller(self) -> SqsPoller:
        """An SQS event-source player over the four priority queues, immediate first."""
        return SqsPoller(
            sender_handler, [self.env[v] for v in QUEUE_VARIABLES], client=self.env.client("sqs"), name="test-sender"
        )

    def pump(self, rounds: int = 50) -> int:
        """Deliver batches until the queues have nothing visible; how many records were handled."""
        poller = self.poller()
        handled = 0
        for _ in range(rounds):
            count = poller.poll_once()
            if count == 0:
                return handled
            handled += count
        return handled

    def scheduler(self) -> dict[str, int]:
        """One scheduler round through its handler (a real EventBridge event shape)."""
        return scheduler_handler(json.loads((EVENTS / "schedule.json").read_text()), None)

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
        from mailproxy.adapters.aws.state import counter_rows

        for row in counter_rows():
            if row["tenant_id"] == self.tenant_id and row["account_id"] == account_id:
                return {k: int(row.get(k, 0)) for k in ("sent", "errors", "deferred", "rate_limited")}
        return {"sent": 0, "errors": 0, "deferred": 0, "rate_limited": 0}

    def age_message(self, message_id: str, seconds: int) -> None:
        """Move a message's schedule into the past (as time passing would)."""
        from mailproxy.adapters.aws.dynamo import from_item

        ddb = self.env.client("dynamodb")
        key = {"tenant_id": {"S": self.tenant_id}, "id": {"S": message_id}}
        item = from_item(ddb.get_item(TableName=self.env["MESSAGES_TABLE"], Key=key)["Item"])
        updates, values = [], {}
        for name in ("deferred_ts", "park_ts"):
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
