"""The ports: what the use cases (intake, sender, scheduler, reporter, metrics) need from storage.

Types for mypy only: import this module under `TYPE_CHECKING` (making a dozen Protocol classes costs about
3 ms, at every cold start of every function, for nothing a running process uses;
tests/unit/test_import_paths.py checks no handler loads it). The records they exchange are in
`mailproxy.domain`, the bundle of one adapter's ports is `mailproxy.stores.Stores`.

Named after the domain, not a database. Two adapters implement them: `mailproxy.adapters.aws`
(DynamoDB, SQS, S3, KMS) and `mailproxy.adapters.sqlite` (one SQLite file). A use case reaches them
through `mailproxy.stores.stores()` and never imports boto3 or sqlite3.

Records are plain dicts (`Record`): a message's fields as API.md lists them, plus what the service keeps
(`rev`, `claim_id`, `history`...); statuses, event types and outcomes are the enums of `mailproxy.domain`.
Every write that can lose a race says so in its result (False / None), never by raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from mailproxy.domain import BounceCounter, Counter, JournalKind, MessageStatus, Outcome, Record, Submission

if TYPE_CHECKING:
    from mailproxy.ledger import EventKey
    from mailproxy.queues import QueueEntry
    from mailproxy.ratelimit import Limits, Reservation
    from mailproxy.report_format import Owed

CounterDeltas = Mapping[tuple[str, str], Mapping[Counter, int]]


class Messages(Protocol):
    """One record per message: its status, history and the claim that guards its sending."""

    def get_state(self, tenant_id: str, message_id: str) -> Record | None: ...

    def get_states(self, tenant_id: str, ids: list[str]) -> dict[str, Record]: ...

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
        ...

    def submit_many(
        self, tenant_id: str, submissions: list[Submission], *, journal: str, now: int
    ) -> list[bool | None]:
        """`submit` each, in order: per submission True (new), False (an unsent one overwritten) or None
        (already final: left as it was). SQLite writes them in one transaction."""
        ...

    def record_rejected(
        self, tenant_id: str, message_id: str, *, uid: str, reason: str, account_id: str | None, now: int
    ) -> bool:
        """Record a refused message as failed, if no message has the id; False when one has."""
        ...

    def list_states(self, tenant_id: str) -> list[Record]: ...

    def delete_state(self, tenant_id: str, message_id: str) -> Record | None: ...

    def delete_states(self, keys: list[tuple[str, str]]) -> None: ...

    def release_suspended(self, tenant_id: str, message_id: str, *, now: int) -> Record | None:
        """A suspended message made pending again; its new record, or None if it was not suspended."""
        ...

    def claim(
        self, tenant_id: str, message_id: str, *, rev: str, claim_id: str, now: int, stale_before: int
    ) -> Record | None:
        """Take a message for sending; the claimed record, or None (gone, stale, final, or held by a live claim)."""
        ...

    def claim_many(
        self, keys: list[tuple[str, str, str]], *, claim_id: str, now: int, stale_before: int
    ) -> list[Record | None]:
        """`claim` each (tenant_id, id, rev), in order: the claimed records, None where a claim was refused.
        SQLite takes them in one transaction."""
        ...

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
        """Record the result of a claimed message, only while the claim is `claim_id`; False if it was lost."""
        ...

    def abandon(self, tenant_id: str, message_id: str, *, claim_id: str, attempts: int, now: int) -> bool: ...

    def add_event(self, tenant_id: str, message_id: str, event: dict[str, Any], *, key: str, now: int) -> bool:
        """Append a history event that happened after the result (a bounce, a complaint) unless the message already
        has one under `key` (kept in `event_keys`); False when it has, or when the message is gone."""
        ...

    def unpark(self, tenant_id: str, message_id: str, *, park_ts: int, now: int) -> bool: ...

    def due_parked(self, now: int, limit: int = 500) -> list[Record]: ...

    def restore(self, item: Record, *, expires_at: int) -> bool: ...

    def extend_expiry(self, tenant_id: str, message_id: str, *, expires_at: int) -> bool: ...


class Tenants(Protocol):
    """Tenants, their API keys and their SMTP accounts."""

    def get_tenant(self, tenant_id: str) -> Record | None: ...

    def create_tenant(self, tenant: dict[str, Any], *, key_hash: str, now: int) -> bool: ...

    def update_tenant(self, tenant_id: str, fields: dict[str, Any], *, now: int, replace: bool = False) -> bool: ...

    def list_tenants(self, *, active_only: bool = False) -> list[Record]: ...

    def delete_tenant(self, tenant_id: str) -> bool: ...

    def set_api_key(self, tenant_id: str, *, key_hash: str | None, expires_at: int | None, now: int) -> bool: ...

    def lookup_api_key(self, key_hash: str) -> Record | None: ...

    def change_suspended_batches(
        self, tenant_id: str, batch_code: str | None, *, suspend: bool, now: int
    ) -> list[str] | None:
        """Suspend or activate a batch (None: the whole tenant) in the tenant's `suspended_batches`
        (`mailproxy.tenants.suspended_after`), read and written as one change: of two at once, neither is
        lost. The batches after it, or None when there is no such tenant."""
        ...

    def put_account(self, tenant_id: str, account: dict[str, Any], *, now: int) -> None: ...

    def get_account(self, tenant_id: str, account_id: str) -> Record | None: ...

    def get_tenants_and_accounts(
        self, tenant_ids: set[str], account_keys: set[tuple[str, str]]
    ) -> tuple[dict[str, Record], dict[tuple[str, str], Record]]: ...

    def get_tenants(self, tenant_ids: set[str]) -> dict[str, Record]: ...

    def list_accounts(self, tenant_id: str) -> list[Record]: ...

    def account_ids(self, tenant_id: str) -> set[str]: ...

    def delete_account(self, tenant_id: str, account_id: str) -> bool: ...

    def note_suppressions(self, tenant_id: str) -> None:
        """Mark the tenant as having a suppression list (`has_suppressions`, never unmarked), before its first
        entry is written: the sender reads the list of a marked tenant only. Nothing if the tenant is gone."""
        ...

    def set_account_pause(self, tenant_id: str, account_id: str, pause: Record | None, *, now: int) -> bool:
        """Pause an account of the tenant (`pause`: why and when, kept in the tenant's `paused_accounts`) or
        resume it (None); True when this call changed it, False when it already was so or the tenant is gone."""
        ...


class RateWindows(Protocol):
    """Send slots per window (minute, hour, day) of an account, and of a tenant's quota."""

    def reserve(self, tenant_id: str, account_id: str, limits: Limits, wanted: int, now: int) -> Reservation: ...

    def reserve_quota(self, tenant_id: str, limits: Limits, wanted: int, now: int) -> Reservation: ...

    def release(self, tenant_id: str, account_id: str, reservation: Reservation, count: int) -> None: ...

    def release_quota(self, tenant_id: str, reservation: Reservation, count: int) -> None: ...

    def forget_tenant(self, tenant_id: str, account_ids: set[str]) -> None: ...

    def forget_cache(self) -> None: ...


class SmtpSessions(Protocol):
    """Leases on an account's SMTP sessions (`mailproxy.sessions`): how many each sender holds open."""

    def hold(
        self,
        tenant_id: str,
        account_id: str,
        holder: str,
        *,
        wanted: int,
        limit: int,
        now: int,
        until: int,
        open_now: int = 0,
    ) -> int:
        """Set `holder`'s lease to as many of `wanted` sessions as `limit` leaves beside the other holders'
        unexpired leases, within its fair share when another holder is short (`mailproxy.sessions.grant`),
        lasting until `until`; the number granted. The lease records the `open_now` connections the holder
        still has open if they are more, until it asks again having closed them. Never, together with every
        concurrent call, more than `limit` held at `now` beyond connections already open."""
        ...

    def forget_tenant(self, tenant_id: str, account_ids: set[str]) -> None: ...


class Counters(Protocol):
    """The persisted /metrics counters and the pending gauge."""

    def add_pending(self, deltas: dict[str, int], *, journal_sk: str | None = None) -> None:
        """Apply pending deltas per tenant, closing the journal entry `journal_sk` in the same write."""
        ...

    def pending_counts(self) -> dict[str, int]: ...

    def pending_count(self, tenant_id: str | None = None) -> int: ...

    def counted_accounts(self, tenant_id: str) -> set[str]: ...

    def counter_rows(self) -> list[dict[str, Any]]: ...

    def add_tenant_counters(self, tenant_id: str, deltas: dict[str, int]) -> None: ...

    def add_account_counters(self, tenant_id: str, account_id: str, deltas: Mapping[BounceCounter, int]) -> None:
        """Add to an account's /metrics counters outside a send batch (bounces and complaints)."""
        ...

    def tenant_counter_rows(self) -> dict[str, Record]: ...

    def ensure_counters(self, tenant_id: str, account_id: str) -> None: ...

    def service_counters(self) -> Record: ...

    def count_command_log_failure(self) -> None: ...

    def add_reputation(
        self, tenant_id: str, account_id: str, *, bounces: int, complaints: int, now: int
    ) -> dict[str, int]:
        """Add bounces and complaints to the account's reputation window; its totals (`sent`, `bounces`,
        `complaints`) over the window ending now. The sends are counted by `Journals.close_batch`."""
        ...

    def reset_reputation(self, tenant_id: str, account_id: str) -> None:
        """Forget the bounces and complaints of the account's window (it was resumed); the sends stay."""
        ...

    def set_paused_gauge(self, tenant_id: str, account_id: str, paused: bool) -> None:
        """Mirror an account's pause into its counters row (`paused`), for /metrics."""
        ...


class Journals(Protocol):
    """Work in flight: what the scheduler finishes when a crash leaves it open."""

    def open_journal(self, kind: JournalKind, keys: list[dict[str, Any]], *, due_ts: int) -> str: ...

    def due_journals(self, now: int) -> list[Record]: ...

    def mark_journal_counted(self, sk: str) -> None: ...

    def close_batch(self, journal_sk: str, *, counters: CounterDeltas, pending: Mapping[str, int]) -> None:
        """Apply a batch's counters and pending deltas and close its journal entry, all or nothing (once)."""
        ...

    def settle_batch(
        self,
        journal_sk: str,
        *,
        counters: CounterDeltas,
        pending: Mapping[str, int],
        open_keys: list[dict[str, Any]],
    ) -> None: ...


class ServiceState(Protocol):
    """The service's own state: start time, scheduler runs, run-now requests."""

    def service_started_at(self, now: int) -> int: ...

    def scheduler_last_run(self) -> int | None: ...

    def mark_scheduler_run(self, now: int) -> None: ...

    def request_run_now(self, scope: str, now: int) -> None: ...

    def run_now_requests(self) -> dict[str, int]: ...

    def clear_run_now(self, scope: str, requested_at: int) -> None: ...

    def forget_tenant(self, tenant_id: str) -> None: ...


class CommandLog(Protocol):
    """The audit trail of API commands."""

    def log_command(
        self,
        *,
        ts: int,
        endpoint: str,
        tenant_id: str | None,
        payload: Any,
        response_status: int,
        source_ip: str | None = None,
        request_id: str | None = None,
    ) -> None: ...

    def list_commands(
        self,
        *,
        tenant_id: str | None,
        since_ts: int | None,
        until_ts: int | None,
        limit: int,
        cursor: str | None = None,
        now: int,
    ) -> tuple[list[dict[str, Any]], str | None]: ...


class Payloads(Protocol):
    """Message payloads (blobs), written once per submission."""

    def store(self, tenant_id: str, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Store (id, rev, payload) entries one by one (each may outlive any pack)."""
        ...

    def store_pack(self, tenant_id: str, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> str | None:
        """Store (id, rev, payload) entries together; the pack's key (None when there are none)."""
        ...

    def pin(self, tenant_id: str, message_id: str, rev: str, payload: dict[str, Any]) -> None: ...

    def load_payloads(
        self, records: Iterable[Mapping[str, Any]]
    ) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]: ...

    def forget(self, records: Iterable[Mapping[str, Any]]) -> None: ...

    def delete_tenant_payloads(self, tenant_id: str) -> None: ...

    def delete_payloads(self, keys: list[tuple[str, str]]) -> None: ...


class WorkQueue(Protocol):
    """The priority queues of messages to send."""

    def enqueue(self, entries: list[QueueEntry]) -> None:
        """Put every entry on its priority's queue, after its delay; raise if any is refused."""
        ...

    def dead_letter_depth(self) -> int | None:
        """Messages given up on by the queue (None when it cannot be known)."""
        ...


class Outbox(Protocol):
    """Delivery-report events owed to each tenant, the per-tenant lease of the reporter, its sync state."""

    def owe(self, tenant_id: str, owed: list[Owed], key: str) -> None: ...

    def chunks(self, tenant_id: str) -> list[Record]: ...

    def oldest_owed_ts(self, tenant_id: str) -> int | None: ...

    def drop_chunks(self, tenant_id: str, chunks: list[Record]) -> None:
        """Delete these chunks ({sk, events} as `chunks` read them), each unless it was rewritten since: a
        retried batch may write more events under the same key while a round reports what it read, and
        what it added must stay owed."""
        ...

    def acquire(self, tenant_id: str, lease_id: str, now: int, *, ignore_backoff: bool) -> Record | None: ...

    def release(
        self, tenant_id: str, lease_id: str, sets: dict[str, Any], removes: Iterable[str] = ()
    ) -> Record | None: ...

    def sync_states(self) -> dict[str, Record]: ...

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop a deleted tenant's outbox and sync state (its ledger is forgotten through `Ledger.forget`)."""
        ...


class Ledger(Protocol):
    """Which report events each tenant acknowledged, and when."""

    def acknowledged_in(self, tenant_id: str, chunk_keys: list[str]) -> dict[str, dict[EventKey, int]]: ...

    def record(self, tenant_id: str, acked: Mapping[str, Mapping[EventKey, int]]) -> None: ...

    def acknowledged_events(self, tenant_id: str) -> dict[EventKey, int]: ...

    def forget(self, tenant_id: str) -> None: ...


class BounceState(Protocol):
    """Where the bounce poller stopped in each bounce mailbox, and the (sealed) key VERP return paths are signed with."""

    def position(self, mailbox: str) -> Record | None:
        """The mailbox's `identity`, `uidvalidity` and `last_uid` (the highest UID processed), or None."""
        ...

    def save_position(self, mailbox: str, *, identity: str, uidvalidity: int, last_uid: int, now: int) -> None: ...

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop the positions of a deleted tenant's mailboxes (keys `<tenant_id>/...`)."""
        ...

    def sealed_signing_key(self) -> bytes | None: ...

    def offer_signing_key(self, sealed: bytes) -> bytes:
        """Store `sealed` as the signing key unless one is stored already; the stored one (the first offer wins)."""
        ...


class Suppressions(Protocol):
    """Each tenant's suppression list (addresses never sent to again) and the soft bounces counted per address.

    Addresses are keys as `mailproxy.addresses.suppression_key` makes them."""

    def put(self, tenant_id: str, entry: Record) -> bool:
        """Add (or replace) the entry of `entry["address"]`; True when the address was not suppressed."""
        ...

    def add_if_absent(self, tenant_id: str, entry: Record) -> bool:
        """Add the entry of `entry["address"]` unless the address is listed (its entry is then left as it is);
        True when it was added."""
        ...

    def remove(self, tenant_id: str, address: str) -> bool:
        """Take an address off the list; False when it was not on it."""
        ...

    def find(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Record]:
        """The entries among (tenant_id, address) keys, read together (one batched read per 100)."""
        ...

    def list_entries(self, tenant_id: str, *, after: str | None, limit: int) -> list[Record]:
        """Up to `limit` entries of the tenant in address order, those after the address `after`."""
        ...

    def note_soft_bounce(self, tenant_id: str, address: str, *, ts: int, window_seconds: int) -> int:
        """Count a soft bounce of the address; how many it had in the window ending at `ts`, this one included."""
        ...

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop a deleted tenant's list and soft-bounce counts."""
        ...


class Sealer(Protocol):
    """Secrets (SMTP passwords, tenants' tokens) sealed at rest, bound to a context."""

    def encrypt_secret(self, plaintext: str, *, context: str) -> bytes: ...

    def decrypt_secret(self, ciphertext: bytes, *, context: str) -> str: ...


class LargeFiles(Protocol):
    """Large attachments kept for download links (docs/large-files.md), under keys `mailproxy.large_files` makes
    (`uploads/<tenant>/<id>`, `files/<days>d/<tenant>/<id>`), and the first download of each link."""

    def presigned_upload(self, key: str, *, max_bytes: int, expires_in: int) -> dict[str, Any] | None:
        """A form (`url`, `fields`) that uploads one file of at most `max_bytes` to `key`; None when the
        storage has no upload of its own (the service's upload route then takes it)."""
        ...

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the file at `key` from its chunks; how many bytes."""
        ...

    def size(self, key: str) -> int | None:
        """The stored file's size in bytes, None when there is none."""
        ...

    def read(self, key: str, *, max_bytes: int) -> bytes:
        """The whole file (ValueError past `max_bytes`, FileNotFoundError when missing)."""
        ...

    def copy(self, source: str, target: str) -> None:
        """Store a copy of `source` at `target` (without passing its bytes through the caller on AWS)."""
        ...

    def download(self, key: str, *, filename: str, mime_type: str, expires_in: int) -> tuple[str, str]:
        """How to serve the file: ("redirect", a presigned URL valid `expires_in` s) or ("path", a local path)."""
        ...

    def signing_key(self) -> bytes | None:
        """The storage's own link-signing material (the one-machine runtime's key file in its data directory,
        made on first use), or None where the deployment provides it (a secret on AWS)."""
        ...

    def first_download(self, link_id: str, *, now: int, keep_until: int) -> int:
        """When the link was first downloaded: `now` if this is the first time (recorded until `keep_until`)."""
        ...

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop what can be dropped at once of a deleted tenant's uploads and files (the rest expires: links
        of a tenant that no longer exists are refused, and storage's own retention deletes the files)."""
        ...
