"""The Sealer port: secrets sealed at rest and bound to a context (KMS on AWS, AES-256-GCM on SQLite)."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from mailproxy.adapters.sqlite.sealer import KEY_FILE, SecretUnreadable, SqliteSealer
from mailproxy.errors import ConfigurationError
from mailproxy.stores import Stores


def test_a_sealed_secret_opens_under_its_context(stores: Stores) -> None:
    for secret in ("smtp-pässword", '{"token": "t"}' * 250):  # KMS seals 1 to 4096 bytes
        sealed = stores.sealer.encrypt_secret(secret, context="account/acme/main")
        assert isinstance(sealed, bytes)
        assert secret.encode() not in sealed
        assert stores.sealer.decrypt_secret(sealed, context="account/acme/main") == secret


def test_a_secret_cannot_be_opened_under_another_context(stores: Stores) -> None:
    sealed = stores.sealer.encrypt_secret("tok-s3cret", context="tenant/acme")
    with pytest.raises(Exception) as refused:  # KMS's InvalidCiphertextException on AWS
        stores.sealer.decrypt_secret(sealed, context="tenant/beta")
    assert "tok-s3cret" not in str(refused.value)


def test_a_damaged_secret_is_refused(stores: Stores) -> None:
    sealed = bytearray(stores.sealer.encrypt_secret("tok-s3cret", context="tenant/acme"))
    sealed[-1] ^= 1
    with pytest.raises(Exception):  # noqa: B017 - each adapter has its own error type
        stores.sealer.decrypt_secret(bytes(sealed), context="tenant/acme")


# ---------------------------------------------------------------------- SQLite: the local key


def test_the_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    sealed = SqliteSealer(str(tmp_path), "").encrypt_secret("pw", context="c")
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_bytes())) == 32
    assert SqliteSealer(str(tmp_path), "").decrypt_secret(sealed, context="c") == "pw"  # another process, same key


def test_nothing_is_made_before_the_first_use(tmp_path: Path) -> None:
    SqliteSealer(str(tmp_path / "data"), "")
    assert not (tmp_path / "data").exists()


def test_a_given_key_is_used_and_no_file_is_made(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    sealed = SqliteSealer(str(tmp_path), key).encrypt_secret("pw", context="c")
    assert not (tmp_path / KEY_FILE).exists()
    assert SqliteSealer(str(tmp_path / "elsewhere"), key).decrypt_secret(sealed, context="c") == "pw"


def test_another_key_cannot_open_a_secret_and_says_so_without_the_key(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    sealed = SqliteSealer(str(tmp_path), key).encrypt_secret("pw", context="c")
    with pytest.raises(SecretUnreadable, match="another key") as refused:
        SqliteSealer(str(tmp_path), "").decrypt_secret(sealed, context="c")
    assert key not in str(refused.value)
    with pytest.raises(SecretUnreadable, match="another context"):
        SqliteSealer(str(tmp_path), key).decrypt_secret(sealed, context="d")
    with pytest.raises(SecretUnreadable):
        SqliteSealer(str(tmp_path), key).decrypt_secret(b"\x02" + sealed[1:], context="c")
    with pytest.raises(SecretUnreadable):
        SqliteSealer(str(tmp_path), key).decrypt_secret(b"short", context="c")


@pytest.mark.parametrize("bad", ["not base64 at all!", base64.b64encode(b"16 bytes only...").decode()])
def test_a_malformed_key_is_a_configuration_error_that_does_not_show_it(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigurationError, match="GMP_SEALING_KEY") as refused:
        SqliteSealer(str(tmp_path), bad).encrypt_secret("pw", context="c")
    assert bad not in str(refused.value)
    (tmp_path / KEY_FILE).write_text(bad)
    with pytest.raises(ConfigurationError, match=KEY_FILE) as refused:
        SqliteSealer(str(tmp_path), "").encrypt_secret("pw", context="c")
    assert bad not in str(refused.value)


def test_the_sealer_does_not_show_its_key(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    sealer = SqliteSealer(str(tmp_path), key)
    sealer.encrypt_secret("pw", context="c")
    assert key not in repr(sealer)
    assert key not in str(vars(sealer).get("_aead"))


def _seal_in_a_process(data_dir: str, start: Any, results: Any) -> None:
    start.wait()
    results.put(SqliteSealer(data_dir, "").encrypt_secret("pw", context="race"))


def test_processes_racing_to_make_the_key_end_with_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=_seal_in_a_process, args=(str(tmp_path), start, results)) for _ in range(3)]
    for process in processes:
        process.start()
    start.set()
    sealed = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    opener = SqliteSealer(str(tmp_path), "")
    assert [opener.decrypt_secret(s, context="race") for s in sealed] == ["pw"] * 3
