"""`gmp files upload`: a file POSTed to the form `POST /large-files` answered (docs/large-files.md).

The form goes to storage (S3 on AWS, the service's own `/large-files/receive` under `make run`), never through
the API: it is sent without the API token (the form's fields are its authority), as multipart/form-data with
every field first and the file last (S3 ignores fields after the file). httpx reads the file in chunks as it
sends it, so a big file is never held in memory, and gives the length from the file's size (S3 refuses a
chunked POST).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin

import httpx

from gmp_client import ConnectionFailed
from gmp_client._core import error_detail, token_headers
from gmp_client.errors import error_for

from .config import CliError


def file_size(path: Path) -> int:
    """The size of a regular, non-empty file to upload; a CliError (exit 2) otherwise."""
    try:
        if not path.is_file():
            raise CliError(f"{path}: not a file")
        size = path.stat().st_size
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    if size == 0:
        raise CliError(f"{path} is empty (an upload holds 1 byte at least)")
    return size


def post_form(
    url: str,
    fields: Mapping[str, str],
    file_field: str,
    path: Path,
    *,
    filename: str,
    base_url: str,
    timeout: float,
) -> None:
    """POST the upload form with the file streamed from disk; the refusal as the client's ApiError."""
    target = urljoin(base_url.rstrip("/") + "/", url)  # a form naming a path is the API server's
    mime_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    # token_headers(None): the client's User-Agent, and no X-API-Token: the form goes to storage, not the API.
    with httpx.Client(headers=token_headers(None), timeout=timeout) as http, path.open("rb") as stream:
        try:
            response = http.post(target, data=dict(fields), files={file_field: (filename, stream, mime_type)})
        except httpx.TransportError as exc:
            raise ConnectionFailed(target, " ".join(str(exc).split()) or type(exc).__name__) from None
    if not response.is_success:
        raise error_for(response.status_code, error_detail(response), method="POST", url=target)
