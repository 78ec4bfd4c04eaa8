"""Large files on one machine: files under `large-files/` of the data directory, first downloads in SQLite.

A file is written to a temporary name beside its target and renamed, so a reader never sees half of one. The
retention loop of the one-machine runtime deletes what the bucket's lifecycle rules would on AWS
(`sweep`); a download record carries `expires_at`, which the runtime's TTL sweep honours.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailproxy.adapters.sqlite.db import Database
from mailproxy.adapters.sqlite.sealer import key_file

if TYPE_CHECKING:
    from mailproxy import ports

FILES_DIR = "large-files"
SIGNING_KEY_FILE = "link-signing.key"  # the data directory's link-signing material, beside sealing.key
SCHEMA = """
CREATE TABLE IF NOT EXISTS large_file_downloads (
    link_id TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
"""


class SqliteLargeFiles:
    """Ports' LargeFiles over the data directory (files) and the database (first downloads)."""

    def __init__(self, db: Database, data_dir: str) -> None:
        self.db = db
        self.root = Path(data_dir) / FILES_DIR
        self._key_path = str(Path(data_dir) / SIGNING_KEY_FILE)
        self._key: bytes | None = None

    def signing_key(self) -> bytes:
        """`link-signing.key` of the data directory, made on first use (mode 0600), as the sealing key is."""
        if self._key is None:
            self._key = key_file(self._key_path)
        return self._key

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not parts or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            raise ValueError(f"not a file key: {key!r}")
        return self.root.joinpath(*parts)

    def presigned_upload(self, key: str, *, max_bytes: int, expires_in: int) -> dict[str, Any] | None:
        """None: uploads go through the service's own route (`POST /large-files/receive`)."""
        return None

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the file beside its target, then rename it into place."""
        return self._write(key, chunks)

    def _write(self, key: str, chunks: Iterable[bytes]) -> int:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        written = 0
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return written

    def size(self, key: str) -> int | None:
        """The file's size, None when there is none."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, key: str, *, max_bytes: int) -> bytes:
        """The file's bytes (FileNotFoundError, ValueError past `max_bytes`)."""
        with self._path(key).open("rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        return data

    def copy(self, source: str, target: str) -> None:
        """A copy of the file under the target key."""
        src = self._path(source)
        if not src.is_file():
            raise FileNotFoundError(source)
        with src.open("rb") as handle:
            self._write(target, iter(lambda: handle.read(1024 * 1024), b""))

    def download(self, key: str, *, filename: str, mime_type: str, expires_in: int) -> tuple[str, str]:
        """The local path: the service's route streams it."""
        return "path", str(self._path(key))

    def first_download(self, link_id: str, *, now: int, keep_until: int) -> int:
        """Insert the first download unless one is there; the first download's time."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO large_file_downloads (link_id, ts, expires_at) VALUES (?, ?, ?)",
                (link_id, now, keep_until),
            )
            row = tx.execute("SELECT ts FROM large_file_downloads WHERE link_id = ?", (link_id,)).fetchone()
        return int(row[0]) if row else now

    def sweep(self, now: float | None = None) -> int:
        """Delete stored files older than the days their key names (`files/<days>d/...`) and uploads older than
        `upload_days` (what the bucket's lifecycle rules do on AWS); how many."""
        from mailproxy.large_files import UPLOAD_RETENTION_DAYS

        now = time.time() if now is None else now
        removed = 0
        for top, days_of in (("uploads", lambda _p: UPLOAD_RETENTION_DAYS), ("files", _days_of_step)):
            base = self.root / top
            if not base.is_dir():
                continue
            for path in base.rglob("*"):
                if not path.is_file():
                    continue
                days = days_of(path.relative_to(base).parts[0])
                if days is not None and path.stat().st_mtime + days * 86400 <= now:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def forget_tenant(self, tenant_id: str) -> None:
        """Delete the tenant's uploads and stored files (first-download rows expire with their TTL)."""
        shutil.rmtree(self._path(f"uploads/{tenant_id}"), ignore_errors=True)
        files = self.root / "files"
        for step in files.iterdir() if files.is_dir() else ():
            shutil.rmtree(self._path(f"files/{step.name}/{tenant_id}"), ignore_errors=True)

    def remove_all(self) -> None:
        """Every stored file (tests)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _days_of_step(step: str) -> int | None:
    return int(step[:-1]) if step.endswith("d") and step[:-1].isdigit() else None


if TYPE_CHECKING:

    def _implements(db: Database) -> ports.LargeFiles:
        return SqliteLargeFiles(db, "data")
