"""TokenRotationFunction: Secrets Manager's rotation of the admin token, one protocol step per call."""

from typing import Any

from mailproxy.logs import configure_logging
from mailproxy.rotation import rotate

configure_logging("TokenRotationFunction")


def handler(event: dict[str, Any], context: Any) -> None:
    """Run the step Secrets Manager asks for (createSecret, setSecret, testSecret, finishSecret)."""
    rotate(event)
