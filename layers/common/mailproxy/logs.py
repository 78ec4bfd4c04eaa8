"""Logging set-up: Powertools JSON logs in Lambda, `LOG_FORMAT=text` for the human format locally."""

from __future__ import annotations

import logging
import os

SERVICE = "mail-proxy"
TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"


def configure_logging() -> None:
    """Route the package's Powertools loggers to text output when LOG_FORMAT=text (JSON otherwise)."""
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    if os.environ.get("LOG_FORMAT", "json").lower() != "text":
        return
    logger = logging.getLogger(SERVICE)
    logger.setLevel(level)
    formatter = logging.Formatter(TEXT_FORMAT)
    for handler in logger.handlers:
        handler.setFormatter(formatter)
