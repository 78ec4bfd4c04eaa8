"""Logging set-up: Powertools JSON logs (CloudWatch), `LOG_FORMAT=text` for the human format locally.

Every module logs through `logger()`, the Powertools logger of the service `POWERTOOLS_SERVICE_NAME`
names (`mail-proxy` when unset); they share one stdlib logger and one handler, whose level and formatter
`configure_logging` sets from `LOG_LEVEL` and `LOG_FORMAT`. It can be called again (the local stack and
tests switch formats): each call sets both from scratch.
"""

from __future__ import annotations

import functools
import logging

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from mailproxy.settings import logging_settings

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"
_started: set[str] = set()


class TextFormatter(LambdaPowertoolsFormatter):
    """`2025-01-23 10:15:32,456 INFO     Message m-1 sent via primary-smtp`, keeping Powertools' key API."""

    def __init__(self, json_formatter: LambdaPowertoolsFormatter) -> None:
        super().__init__(service=service_name())
        self.json_formatter = json_formatter  # put back when LOG_FORMAT returns to json
        self._text = logging.Formatter(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The human line (and the traceback, when there is one)."""
        return self._text.format(record)


def service_name() -> str:
    """The `service` of every log line: POWERTOOLS_SERVICE_NAME, `mail-proxy` when unset."""
    return logging_settings().service


@functools.cache
def _logger_of(service: str) -> Logger:
    return Logger(service=service)


def logger() -> Logger:
    """The package's Powertools logger (creating its stdout handler on first use)."""
    return _logger_of(service_name())


def log_level() -> int:
    """The level LOG_LEVEL names (INFO when unset or unknown)."""
    level = logging.getLevelName(logging_settings().level)
    return level if isinstance(level, int) else logging.INFO


def configure_logging(function: str | None = None) -> None:
    """Apply LOG_LEVEL and LOG_FORMAT (`json`, the default, or `text`); log `function`'s start once."""
    logger()
    stdlib_logger = logging.getLogger(service_name())
    stdlib_logger.setLevel(log_level())
    text = logging_settings().format == "text"
    for handler in stdlib_logger.handlers:
        current = handler.formatter
        if isinstance(current, TextFormatter):
            json_formatter = current.json_formatter
        elif isinstance(current, LambdaPowertoolsFormatter):
            json_formatter = current
        else:
            json_formatter = LambdaPowertoolsFormatter(service=service_name())
        if text:
            if not isinstance(current, TextFormatter):
                handler.setFormatter(TextFormatter(json_formatter))
        elif current is not json_formatter:
            handler.setFormatter(json_formatter)
    if function and function not in _started:
        _started.add(function)
        logger().info(f"{function} started", extra={"function": function})
