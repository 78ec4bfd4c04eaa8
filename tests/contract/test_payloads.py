"""The payloads port: what intake, the sender and the reporter rely on, on both adapters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from mailproxy.adapters.sqlite.db import Database
from mailproxy.adapters.sqlite.payloads import PACK_EXPIRATION_SECONDS, SCHEMA, SqlitePayloads
from mailproxy.adapters.sqlite.state import SCHEMA as STATE_SCHEMA
from mailproxy.adapters.sqlite.state import SqliteState
from mailproxy.stores import Stores

T = "t1"


def payload(n: int) -> dict[str, Any]:
    return {"subject": f"hello {n}", "to": ["a@example.test"], "body": "ü" * n}


def record(message_id: str, pack: str | None = None, tenant_id: str = T) -> dict[str, Any]:
    value: dict[str, Any] = {"tenant_id": tenant_id, "id": message_id}
    if pack:
        value["pack"] = pack
    return value


def test_stored_payloads_load_with_their_revision(stores: Stores) -> None:
    stores.payloads.store(T, [("m1", "r1", payload(1)), ("m2", "r2", payload(2))])
    loaded = stores.payloads.load_payloads([record("m1"), record("m2"), record("missing")])
    assert loaded == {(T, "m1"): ("r1", payload(1)), (T, "m2"): ("r2", payload(2))}
    stores.payloads.pin(T, "m1", "r3", payload(3))  # a newer revision replaces the payload
    assert stores.payloads.load_payloads([record("m1")]) == {(T, "m1"): ("r3", payload(3))}


def test_a_pack_is_read_by_the_records_that_name_it(stores: Stores) -> None:
    assert stores.payloads.store_pack(T, []) is None
    pack = stores.payloads.store_pack(T, iter([("m1", "r1", payload(1)), ("m2", "r1", payload(2))]))
    assert pack
    loaded = stores.payloads.load_payloads([record("m1", pack), record("m2", pack), record("m3", pack)])
    assert loaded == {(T, "m1"): ("r1", payload(1)), (T, "m2"): ("r1", payload(2))}
    assert stores.payloads.load_payloads([record("m1")]) == {}  # a record naming no pack reads a pinned payload


def test_a_pinned_payload_and_a_pack_entry_are_each_read_by_the_record_that_names_it(stores: Stores) -> None:
    pack = stores.payloads.store_pack(T, [("m1", "r1", payload(1))])
    stores.payloads.pin(T, "m1", "r1", payload(9))  # the sender pins what will outlive the pack
    assert stores.payloads.load_payloads([record("m1")]) == {(T, "m1"): ("r1", payload(9))}
    assert stores.payloads.load_payloads([record("m1", pack)]) == {(T, "m1"): ("r1", payload(1))}


def test_forgotten_messages_lose_their_payloads_and_only_theirs(stores: Stores) -> None:
    pack = stores.payloads.store_pack(T, [("m1", "r1", payload(1)), ("m2", "r1", payload(2))])
    stores.payloads.store(T, [("m3", "r1", payload(3)), ("m4", "r1", payload(4))])
    stores.payloads.forget([record("m1", pack), record("m3")])
    kept = stores.payloads.load_payloads([record("m1", pack), record("m2", pack), record("m3"), record("m4")])
    assert set(kept) == {(T, "m2"), (T, "m4")}
    stores.payloads.forget([record("m2", pack)])  # the pack's last entry
    assert stores.payloads.load_payloads([record("m2", pack)]) == {}


def test_deleting_payloads_by_key_and_by_tenant(stores: Stores) -> None:
    stores.payloads.store(T, [("m1", "r1", payload(1)), ("m2", "r1", payload(2))])
    stores.payloads.store("t2", [("m1", "r1", payload(1))])
    stores.payloads.delete_payloads([(T, "m1"), (T, "missing")])
    assert set(stores.payloads.load_payloads([record("m1"), record("m2")])) == {(T, "m2")}
    stores.payloads.delete_tenant_payloads(T)
    assert stores.payloads.load_payloads([record("m2")]) == {}
    assert set(stores.payloads.load_payloads([record("m1", tenant_id="t2")])) == {("t2", "m1")}


# ---------------------------------------------------------------------- SQLite only: what S3 does on AWS


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    return Database(str(tmp_path / "db.sqlite3"), (SCHEMA, STATE_SCHEMA))


def test_packs_expire_like_their_s3_lifecycle_rule_and_pinned_payloads_stay(sqlite_db: Database) -> None:
    store = SqlitePayloads(sqlite_db)
    pack = store.store_pack(T, [("m1", "r1", payload(1))])
    store.pin(T, "m2", "r1", payload(2))
    created = int(sqlite_db.read("SELECT expires_at FROM payloads WHERE pack <> ''")[0]["expires_at"])
    assert abs(created - PACK_EXPIRATION_SECONDS - time.time()) < 5
    state = SqliteState(sqlite_db)
    assert state.delete_expired(created - 1) == 0
    assert state.delete_expired(created) == 1
    assert set(store.load_payloads([record("m1", pack), record("m2")])) == {(T, "m2")}


def test_a_deleted_tenant_loses_its_packs_too(sqlite_db: Database) -> None:
    store = SqlitePayloads(sqlite_db)
    pack = store.store_pack(T, [("m1", "r1", payload(1))])
    store.delete_tenant_payloads(T)
    assert store.load_payloads([record("m1", pack)]) == {}
