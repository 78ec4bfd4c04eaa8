"""`gmp`, the command line of gmp_client (installed with the `cli` extra). See docs/cli.md."""

from .app import app, main

__all__ = ["app", "main"]
