"""The work queue on SQLite: what the four SQS priority queues, their dead-letter queue and Lambda's event
source mapping do on AWS, as one table that several worker processes share.

An entry is visible from its delay's end; `receive` takes the visible ones, most urgent priority first
(0 = immediate ... 3 = low) then oldest, and leases them: each is invisible for `visibility_seconds`, then
comes back (a crashed worker's messages are received again), unless deleted with the receipt handle of
that receive (a new one each time: an old handle cannot delete a message received again since). An entry
about to be received more than `max_receives` times goes to `dead_letters` instead (SQS's redrive policy).
Receiving is one BEGIN IMMEDIATE transaction, so two processes never lease the same entry at once.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from mailproxy.adapters.sqlite.db import Database

if TYPE_CHECKING:
    from mailproxy import ports
    from mailproxy.queues import QueueEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receives INTEGER NOT NULL DEFAULT 0,
    receipt TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS queue_entries_order ON queue_entries (priority, seq, visible_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    receives INTEGER NOT NULL,
    dead_at REAL NOT NULL
)
"""

MAX_RECEIVES = 5  # template.yaml's RedrivePolicy maxReceiveCount


class SqliteQueue:
    """The work queue port (enqueue, dead_letter_depth) and its consumer side (receive, delete, release)."""

    def __init__(self, db: Database, *, max_receives: int = MAX_RECEIVES) -> None:
        self.db = db
        self.max_receives = max_receives

    def enqueue(self, entries: list[QueueEntry]) -> None:
        """Put every entry on the queue, visible after its delay (no cap: SQS's 900 s limit is SQS's)."""
        now = time.time()
        rows = [(uuid.uuid4().hex, int(e.priority), e.body(), now, now + max(0, int(e.delay))) for e in entries]
        if not rows:
            return
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO queue_entries (message_id, priority, body, sent_at, visible_at) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def dead_letter_depth(self) -> int | None:
        """Messages given up on by the queue."""
        return int(self.db.read("SELECT COUNT(*) AS n FROM dead_letters")[0]["n"])

    def receive(self, max_messages: int, visibility_seconds: int, now: float | None = None) -> list[dict[str, Any]]:
        """Lease up to `max_messages` visible entries for `visibility_seconds`: records shaped as Lambda's SQS
        records (messageId, receiptHandle, body, attributes.ApproximateReceiveCount)."""
        now = time.time() if now is None else now
        received: list[dict[str, Any]] = []
        taken: set[int] = set()
        # An idle worker asks several times a second: a read (no lock) first, the write lock only for work.
        if not self.db.read("SELECT 1 FROM queue_entries WHERE visible_at <= ? LIMIT 1", (now,)):
            return received
        with self.db.transaction() as tx:
            while len(received) < max_messages:
                rows = tx.execute(
                    "SELECT seq, message_id, priority, body, sent_at, receives FROM queue_entries"
                    " WHERE visible_at <= ? ORDER BY priority, seq LIMIT ?",
                    (now, max_messages - len(received) + len(taken)),
                ).fetchall()
                dead = 0
                for row in rows:
                    if row["seq"] in taken or len(received) == max_messages:
                        continue  # leased by this very call (a zero visibility leaves it visible)
                    count = int(row["receives"]) + 1
                    if count > self.max_receives:
                        tx.execute(
                            "INSERT INTO dead_letters (message_id, priority, body, sent_at, receives, dead_at)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            (row["message_id"], row["priority"], row["body"], row["sent_at"], row["receives"], now),
                        )
                        tx.execute("DELETE FROM queue_entries WHERE seq = ?", (row["seq"],))
                        dead += 1
                        continue
                    receipt = uuid.uuid4().hex
                    tx.execute(
                        "UPDATE queue_entries SET receives = ?, receipt = ?, visible_at = ? WHERE seq = ?",
                        (count, receipt, now + visibility_seconds, row["seq"]),
                    )
                    received.append(_record(row, receipt, count))
                    taken.add(int(row["seq"]))
                if not dead:  # only dead-lettered entries leave room to fill
                    break
        return received

    def delete(self, receipt_handles: list[str]) -> int:
        """Delete the entries of these receipt handles (handled); how many there were (a stale handle counts none)."""
        with self.db.transaction() as tx:
            return sum(
                tx.execute("DELETE FROM queue_entries WHERE receipt = ?", (handle,)).rowcount
                for handle in receipt_handles
            )

    def release(self, receipt_handles: list[str], delay_seconds: int = 0, now: float | None = None) -> int:
        """Make the entries of these receipt handles visible again after `delay_seconds` (a batch item failure);
        how many there were."""
        visible_at = (time.time() if now is None else now) + max(0, delay_seconds)
        with self.db.transaction() as tx:
            return sum(
                tx.execute(
                    "UPDATE queue_entries SET receipt = NULL, visible_at = ? WHERE receipt = ?", (visible_at, handle)
                ).rowcount
                for handle in receipt_handles
            )

    def return_leased(self, now: float | None = None) -> int:
        """Make every leased entry visible now (the one-machine runtime at start, holding its data directory: a
        lease still here was a dead worker's); how many there were. Their claims, if any, still decide."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            return int(
                tx.execute(
                    "UPDATE queue_entries SET receipt = NULL, visible_at = ? WHERE receipt IS NOT NULL AND visible_at > ?",
                    (now, now),
                ).rowcount
            )


def _record(row: Any, receipt: str, count: int) -> dict[str, Any]:
    return {
        "messageId": str(row["message_id"]),
        "receiptHandle": receipt,
        "body": str(row["body"]),
        "attributes": {
            "ApproximateReceiveCount": str(count),
            "SentTimestamp": str(int(float(row["sent_at"]) * 1000)),
        },
        "messageAttributes": {},
        "eventSource": "gmp:sqlite",
    }


if TYPE_CHECKING:

    def _implements(db: Database) -> ports.WorkQueue:
        return SqliteQueue(db)
