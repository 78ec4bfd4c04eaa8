"""MetricsFunction: `GET /health` (no AWS call, no boto3) and `GET /metrics` (Prometheus text)."""

from __future__ import annotations

import json
from typing import Any

HEALTH_BODY = json.dumps({"ok": True, "status": "ok"})


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answer /health here; anything else is the metrics page."""
    if event.get("resource") == "/health" or event.get("path") == "/health":
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json"},
            "body": HEALTH_BODY,
            "isBase64Encoded": False,
        }
    # Imported here: /health stays free of boto3 (and of Powertools, which pulls in botocore).
    from mailproxy.logs import configure_logging
    from mailproxy.metrics import render_response

    configure_logging("MetricsFunction")
    return render_response(event)
