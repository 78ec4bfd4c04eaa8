"""How documents are stored compactly: JSON, zlib-compressed (in DynamoDB binary attributes, S3 objects,
SQLite blobs)."""

from __future__ import annotations

import json
import zlib
from typing import Any


def compress_json(value: Any) -> bytes:
    """Compact JSON, zlib-compressed: how documents are stored in binary attributes (an item is billed
    by its size) and in S3 objects."""
    return zlib.compress(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def decompress_json(blob: bytes) -> Any:
    """A value stored by `compress_json`."""
    return json.loads(zlib.decompress(blob).decode("utf-8"))
