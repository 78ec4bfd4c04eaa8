"""The one-machine runtime (`python -m local.embedded`, what `make run` starts): the service over SQLite."""

from local.embedded.service import EmbeddedService

__all__ = ["EmbeddedService"]
