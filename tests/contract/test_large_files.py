"""The LargeFiles port: what uploads, the sender and the download route rely on, on both adapters (S3 and
StateTable in moto, the data directory and SQLite)."""

from __future__ import annotations

import pytest
from mailproxy.stores import Stores

NOW = 1_767_225_600
FILE = "files/30d/t1/" + "a" * 40
UPLOAD = "uploads/t1/" + "u" * 24


def test_a_written_file_has_its_size_and_bytes(stores: Stores) -> None:
    files = stores.large_files
    assert files.write(FILE, [b"abc", b"", b"def"]) == 6
    assert files.size(FILE) == 6
    assert files.read(FILE, max_bytes=6) == b"abcdef"
    assert files.write(FILE, [b"xy"]) == 2  # written again: replaced
    assert files.read(FILE, max_bytes=10) == b"xy"


def test_a_missing_file_has_no_size_and_cannot_be_read(stores: Stores) -> None:
    assert stores.large_files.size(FILE) is None
    with pytest.raises(FileNotFoundError):
        stores.large_files.read(FILE, max_bytes=10)


def test_a_file_past_the_limit_is_not_read(stores: Stores) -> None:
    stores.large_files.write(FILE, [b"x" * 11])
    with pytest.raises(ValueError):
        stores.large_files.read(FILE, max_bytes=10)


def test_a_copy_has_the_same_bytes(stores: Stores) -> None:
    stores.large_files.write(UPLOAD, [b"uploaded"])
    stores.large_files.copy(UPLOAD, FILE)
    assert stores.large_files.read(FILE, max_bytes=100) == b"uploaded"
    assert stores.large_files.size(UPLOAD) == 8


def test_the_first_download_of_a_link_is_the_one_kept(stores: Stores) -> None:
    files = stores.large_files
    assert files.first_download("link-1", now=NOW, keep_until=NOW + 86400) == NOW
    assert files.first_download("link-1", now=NOW + 500, keep_until=NOW + 86400) == NOW
    assert files.first_download("link-2", now=NOW + 700, keep_until=NOW + 86400) == NOW + 700


def test_forgetting_a_tenant_leaves_other_tenants_files(stores: Stores, adapter: str) -> None:
    files = stores.large_files
    other = "files/30d/t2/" + "b" * 40
    for key in (FILE, UPLOAD, other, "uploads/t2/" + "v" * 24):
        files.write(key, [b"data"])
    files.forget_tenant("t1")
    assert files.size(other) == 4 and files.size("uploads/t2/" + "v" * 24) == 4
    if adapter == "sqlite":  # on AWS the bucket's lifecycle rules delete them (docs/large-files.md)
        assert files.size(FILE) is None and files.size(UPLOAD) is None
