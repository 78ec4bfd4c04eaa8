"""A tenant's sync endpoint on loopback, as genro-mail-proxy's clients serve it: it records every delivery
report (and the Authorization header it came with) and acknowledges it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SyncEndpoint:
    """The endpoint's reports, in arrival order."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                with endpoint.lock:
                    endpoint.reports.append(body)
                    endpoint.auth.append(self.headers.get("Authorization"))
                answer = json.dumps({"ok": True, "queued": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def entries(self) -> list[dict[str, Any]]:
        """Every delivery-report entry received so far, in order."""
        with self.lock:
            return [e for r in self.reports for e in r.get("delivery_report", [])]

    def sent_ids(self) -> set[str]:
        """Ids reported as sent."""
        return {str(e["id"]) for e in self.entries() if e.get("sent_ts")}


@contextlib.contextmanager
def sync_endpoint() -> Iterator[SyncEndpoint]:
    """A SyncEndpoint serving until the block ends."""
    endpoint = SyncEndpoint()
    thread = threading.Thread(target=endpoint.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
