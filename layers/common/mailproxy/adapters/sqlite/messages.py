"""The messages port on SQLite: one JSON document per message, and the log of its changes (the stream).

Each DynamoDB conditional write of `mailproxy.messages` is a transaction here: read the document, check
the same condition, write the new one. DynamoDB's stream of the messages table feeds the reporter on AWS;
here every write also appends the old and new documents to `message_changes` in its own transaction,
and the one-machine runtime reads that log (`changes`, `drop_changes`) as the reporter's stream.
`expire` plays the table's TTL: it deletes what expired and logs each removal as an expired change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mailproxy import clock
from mailproxy.adapters.sqlite.db import Database, dumps, loads
from mailproxy.domain import AlreadyFinal, EventType, MessageStatus, Outcome, Record, Submission
from mailproxy.messages import EARLY_SLACK_SECONDS, PARK_SHARD, abandoned_reason, event, rejected_record, retained_until

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT,
    park_ts INTEGER,
    expires_at INTEGER,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_parked ON messages (park_ts) WHERE park_ts IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS message_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    old_doc TEXT,
    new_doc TEXT,
    expired INTEGER NOT NULL DEFAULT 0
)
"""

_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
_SENDABLE = (MessageStatus.PENDING, MessageStatus.DEFERRED)
_UNSENT = (MessageStatus.PENDING, MessageStatus.DEFERRED, MessageStatus.SUSPENDED)
_FINAL = (MessageStatus.SENT, MessageStatus.ERROR)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _at_most(value: Any, bound: int) -> bool:
    """DynamoDB's `a <= b`: false unless `a` is a number (a missing or null attribute never compares)."""
    return _number(value) and bool(value <= bound)


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class _Stored:
    """A message's document as read inside a transaction: the dict, and its stored text for the change log."""

    __slots__ = ("doc", "id", "tenant_id", "text")

    def __init__(self, tenant_id: str, message_id: str, text: str | None) -> None:
        self.tenant_id, self.id, self.text = tenant_id, message_id, text
        self.doc: Record | None = loads(text)


class SqliteMessages:
    """The messages port over the `messages` table; every write logged to `message_changes`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ reads

    def get_state(self, tenant_id: str, message_id: str) -> Record | None:
        """The document of one message, or None."""
        rows = self.db.read("SELECT doc FROM messages WHERE tenant_id = ? AND id = ?", (tenant_id, message_id))
        return dict(loads(rows[0]["doc"])) if rows else None

    def get_states(self, tenant_id: str, ids: list[str]) -> dict[str, Record]:
        """id → document for the existing messages among `ids` of one tenant."""
        found: dict[str, Record] = {}
        for part in _chunks(list(dict.fromkeys(ids))):
            marks = ",".join("?" * len(part))
            sql = f"SELECT id, doc FROM messages WHERE tenant_id = ? AND id IN ({marks})"
            found.update({str(r["id"]): dict(loads(r["doc"])) for r in self.db.read(sql, (tenant_id, *part))})
        return found

    def list_states(self, tenant_id: str) -> list[Record]:
        """Every message of a tenant, by id (DynamoDB's sort-key order)."""
        rows = self.db.read("SELECT doc FROM messages WHERE tenant_id = ? ORDER BY id", (tenant_id,))
        return [dict(loads(r["doc"])) for r in rows]

    def due_parked(self, now: int, limit: int = 500) -> list[Record]:
        """Parked messages whose time has come, earliest first: the attributes ParkedIndex projects."""
        rows = self.db.read(
            "SELECT doc FROM messages WHERE park_ts IS NOT NULL AND park_ts <= ? ORDER BY park_ts LIMIT ?",
            (now, limit),
        )
        projected = ("tenant_id", "id", "park_shard", "park_ts", "priority")
        return [{k: doc[k] for k in projected if k in doc} for doc in (loads(r["doc"]) for r in rows)]

    # ------------------------------------------------------------------ writes

    def submit(
        self,
        tenant_id: str,
        message_id: str,
        *,
        uid: str,
        rev: str,
        account_id: str,
        priority: int,
        batch_code: str | None,
        status: MessageStatus,
        deferred_ts: int | None,
        park_ts: int | None,
        pack: str | None,
        journal: str,
        now: int,
    ) -> bool:
        """Create or overwrite an unsent message; True if it is new. Raises AlreadyFinal otherwise."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            old = stored.doc
            if old is not None and old.get("status") not in _UNSENT:
                raise AlreadyFinal(message_id)
            new: Record = dict(old or {"tenant_id": tenant_id, "id": message_id})
            new.setdefault("pk", uid)
            new.setdefault("created_at", now)
            new.setdefault("created_by", journal)
            new.update(rev=rev, account_id=account_id, priority=priority, status=status, updated_at=now, attempts=0)
            new["history"] = [*(new.get("history") or []), event(EventType.QUEUED, now)]
            for name in ("error", "error_ts", "claim_id", "claim_ts"):
                new.pop(name, None)
            for name, value in (("batch_code", batch_code), ("deferred_ts", deferred_ts), ("pack", pack)):
                if value is None:
                    new.pop(name, None)
                else:
                    new[name] = value
            if park_ts is None:
                new.pop("park_shard", None)
                new.pop("park_ts", None)
            else:
                new.update(park_shard=PARK_SHARD, park_ts=park_ts)
            self._write(tx, stored, new)
        return old is None

    def submit_many(
        self, tenant_id: str, submissions: list[Submission], *, journal: str, now: int
    ) -> list[bool | None]:
        """`submit` each, in order, in one transaction: True (new), False (an unsent one overwritten) or None
        (already final, left as it was) per submission."""
        outcomes: list[bool | None] = []
        with self.db.transaction():
            for s in submissions:
                try:
                    outcomes.append(
                        self.submit(
                            tenant_id,
                            s.id,
                            uid=s.uid,
                            rev=s.rev,
                            account_id=s.account_id,
                            priority=s.priority,
                            batch_code=s.batch_code,
                            status=s.status,
                            deferred_ts=s.deferred_ts,
                            park_ts=s.park_ts,
                            pack=s.pack,
                            journal=journal,
                            now=now,
                        )
                    )
                except AlreadyFinal:  # raised before anything of this message was written
                    outcomes.append(None)
        return outcomes

    def record_rejected(
        self, tenant_id: str, message_id: str, *, uid: str, reason: str, account_id: str | None, now: int
    ) -> bool:
        """Record a message rejected at submission as failed (only if the id is new); True if recorded."""
        return self._put_if_absent(
            rejected_record(tenant_id, message_id, uid=uid, reason=reason, account_id=account_id, now=now)
        )

    def delete_state(self, tenant_id: str, message_id: str) -> Record | None:
        """Delete a message; its document, or None if there was none."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            if stored.doc is not None:
                self._write(tx, stored, None)
        return stored.doc

    def delete_states(self, keys: list[tuple[str, str]]) -> None:
        """Delete many messages (no conditions: for cascades and retention)."""
        with self.db.transaction() as tx:
            for tenant_id, message_id in keys:
                stored = self._read(tx, tenant_id, message_id)
                if stored.doc is not None:
                    self._write(tx, stored, None)

    def release_suspended(self, tenant_id: str, message_id: str, *, now: int) -> Record | None:
        """Turn a suspended message back to pending; its new document, or None if it was not suspended."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            if stored.doc is None or stored.doc.get("status") != MessageStatus.SUSPENDED:
                return None
            new = {**stored.doc, "status": MessageStatus.PENDING, "updated_at": now}
            text = self._write(tx, stored, new)
        return dict(loads(text))  # as it reads back (enums as their values), as DynamoDB's ALL_NEW returns it

    def claim(
        self, tenant_id: str, message_id: str, *, rev: str, claim_id: str, now: int, stale_before: int
    ) -> Record | None:
        """Take a message for sending; the claimed document, or None when it is gone, stale, final, not due
        yet or held by a live claim. `claims` counts the claims since its last recorded result."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            doc = stored.doc
            if doc is None or doc.get("rev") != rev:
                return None
            status = doc.get("status")
            takeable = status in _SENDABLE or (
                status == MessageStatus.SENDING and "claim_ts" in doc and _at_most(doc["claim_ts"], stale_before)
            )
            # A copy that arrives before the message is due (a duplicate of a delayed one) is not taken.
            due = "deferred_ts" not in doc or _at_most(doc["deferred_ts"], now + EARLY_SLACK_SECONDS)
            if not (takeable and due):
                return None
            new = {
                **doc,
                "status": MessageStatus.SENDING,
                "claim_id": claim_id,
                "claim_ts": now,
                "updated_at": now,
                "claims": int(doc.get("claims", 0)) + 1,
            }
            text = self._write(tx, stored, new)
        return dict(loads(text))  # as it reads back (enums as their values), as DynamoDB's ALL_NEW returns it

    def claim_many(
        self, keys: list[tuple[str, str, str]], *, claim_id: str, now: int, stale_before: int
    ) -> list[Record | None]:
        """`claim` each (tenant_id, id, rev), in order, in one transaction: the claimed documents, None where
        a claim was refused."""
        with self.db.transaction():
            return [
                self.claim(tenant_id, message_id, rev=rev, claim_id=claim_id, now=now, stale_before=stale_before)
                for tenant_id, message_id, rev in keys
            ]

    def finish(
        self,
        tenant_id: str,
        message_id: str,
        *,
        claim_id: str,
        status: MessageStatus,
        now: int,
        history_event: dict[str, Any] | None,
        outcome: Outcome,
        fields: dict[str, Any] | None = None,
        remove: tuple[str, ...] = (),
    ) -> bool:
        """Record the result of a claimed message (only while the claim is `claim_id`); False if it was lost."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            doc = stored.doc
            if doc is None or "claim_id" not in doc or doc["claim_id"] != claim_id:
                return False
            new: Record = {**doc, "status": status, "updated_at": now, "outcome": outcome, "outcome_by": claim_id}
            new.update(fields or {})
            if history_event is not None:
                new["history"] = [*(doc.get("history") or []), history_event]
            for name in ("claim_id", "claim_ts", "claims", *remove):
                new.pop(name, None)
            self._write(tx, stored, new)
        return True

    def abandon(self, tenant_id: str, message_id: str, *, claim_id: str, attempts: int, now: int) -> bool:
        """Fail a message whose stale claim `claim_id` was its last allowed attempt; False if it was taken over."""
        reason = abandoned_reason(attempts)
        return self.finish(
            tenant_id,
            message_id,
            claim_id=claim_id,
            status=MessageStatus.ERROR,
            now=now,
            history_event=event(EventType.ERROR, now, reason),
            outcome=Outcome.ERROR,
            fields={"error": reason, "error_ts": now, "expires_at": retained_until(now)},
        )

    def add_event(self, tenant_id: str, message_id: str, event: dict[str, Any], *, key: str, now: int) -> bool:
        """Append a later history event (a bounce, a complaint) unless one under `key` is there; False if it is,
        or if the message is gone."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            doc = stored.doc
            if doc is None or key in (doc.get("event_keys") or ()):
                return False
            new: Record = {**doc, "history": [*(doc.get("history") or []), event], "updated_at": now}
            new["event_keys"] = sorted({*(doc.get("event_keys") or ()), key})  # a list: JSON has no sets
            self._write(tx, stored, new)
        return True

    def unpark(self, tenant_id: str, message_id: str, *, park_ts: int, now: int) -> bool:
        """Take a due message off the parked index once it is back on a queue; False if it changed meanwhile."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            doc = stored.doc
            if doc is None or "park_ts" not in doc or doc["park_ts"] != park_ts:
                return False
            new = {k: v for k, v in doc.items() if k not in ("park_shard", "park_ts")}
            new["updated_at"] = now
            self._write(tx, stored, new)
        return True

    def restore(self, item: Record, *, expires_at: int) -> bool:
        """Put back a message the TTL removed while its reports may still be owed, marked `restored` (its
        events are not owed twice); False if the id was submitted again meanwhile."""
        return self._put_if_absent({**item, "expires_at": expires_at, "restored": True})

    def extend_expiry(self, tenant_id: str, message_id: str, *, expires_at: int) -> bool:
        """Move the retention expiry of a final message; False if it is not one (any more)."""
        with self.db.transaction() as tx:
            stored = self._read(tx, tenant_id, message_id)
            if stored.doc is None or stored.doc.get("status") not in _FINAL:
                return False
            self._write(tx, stored, {**stored.doc, "expires_at": expires_at})
        return True

    # ------------------------------------------------------------------ the TTL and the change log

    def expire(self, now: int) -> list[Record]:
        """Delete the messages whose `expires_at` has passed, each logged as an expired change (what
        DynamoDB's TTL does, its removals on the stream); their documents."""
        gone: list[Record] = []
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT tenant_id, id, doc FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).fetchall()
            for row in rows:
                stored = _Stored(str(row["tenant_id"]), str(row["id"]), str(row["doc"]))
                self._write(tx, stored, None, expired=True)
                gone.append(dict(stored.doc or {}))
        return gone

    def changes(self, limit: int) -> list[dict[str, Any]]:
        """The oldest `limit` logged changes: seq, ts, tenant_id, id, old and new documents, expired."""
        rows = self.db.read(
            "SELECT seq, ts, tenant_id, id, old_doc, new_doc, expired FROM message_changes ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [
            {
                "seq": int(r["seq"]),
                "ts": int(r["ts"]),
                "tenant_id": str(r["tenant_id"]),
                "id": str(r["id"]),
                "old": loads(r["old_doc"]),
                "new": loads(r["new_doc"]),
                "expired": bool(r["expired"]),
            }
            for r in rows
        ]

    def drop_changes(self, up_to_seq: int) -> None:
        """Forget the logged changes up to `up_to_seq` (once the reporter has handled them)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM message_changes WHERE seq <= ?", (up_to_seq,))

    # ------------------------------------------------------------------ inside a transaction

    def _read(self, tx: sqlite3.Connection, tenant_id: str, message_id: str) -> _Stored:
        row = tx.execute("SELECT doc FROM messages WHERE tenant_id = ? AND id = ?", (tenant_id, message_id)).fetchone()
        return _Stored(tenant_id, message_id, None if row is None else str(row["doc"]))

    def _put_if_absent(self, item: Record) -> bool:
        """Write a whole document unless its id exists; False when it does."""
        with self.db.transaction() as tx:
            stored = self._read(tx, str(item["tenant_id"]), str(item["id"]))
            if stored.doc is not None:
                return False
            self._write(tx, stored, item)
        return True

    def _write(
        self, tx: sqlite3.Connection, stored: _Stored, new: Record | None, *, expired: bool = False
    ) -> str | None:
        """Replace (or delete, when `new` is None) the document read as `stored`, and log the change; the text
        stored."""
        tenant_id, message_id = stored.tenant_id, stored.id
        text = None if new is None else dumps(new)
        if new is None:
            tx.execute("DELETE FROM messages WHERE tenant_id = ? AND id = ?", (tenant_id, message_id))
        else:
            parked = new.get("park_ts") if new.get("park_shard") == PARK_SHARD else None
            expires = new.get("expires_at")
            tx.execute(
                "INSERT OR REPLACE INTO messages (tenant_id, id, status, park_ts, expires_at, doc)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    tenant_id,
                    message_id,
                    str(new["status"]) if new.get("status") is not None else None,
                    parked if _number(parked) else None,
                    expires if _number(expires) else None,
                    text,
                ),
            )
        tx.execute(
            "INSERT INTO message_changes (ts, tenant_id, id, old_doc, new_doc, expired) VALUES (?, ?, ?, ?, ?, ?)",
            (clock.now_ts(), tenant_id, message_id, stored.text, text, int(expired)),
        )
        return text


if TYPE_CHECKING:

    def _implements(db: Database) -> ports.Messages:
        return SqliteMessages(db)
