"""The SQLite adapter's consumer side, which only the one-machine runtime uses: leasing the work queue, reading
the change log (DynamoDB's stream on AWS) and expiring messages (DynamoDB's TTL)."""

from __future__ import annotations

from mailproxy.adapters.sqlite.files import SqliteLargeFiles
from mailproxy.adapters.sqlite.messages import SqliteMessages
from mailproxy.adapters.sqlite.outbox import SqliteOutbox
from mailproxy.adapters.sqlite.queue import SqliteQueue
from mailproxy.adapters.sqlite.sessions import SqliteSessions
from mailproxy.adapters.sqlite.state import SqliteState
from mailproxy.errors import ConfigurationError
from mailproxy.stores import stores


def sqlite_queue() -> SqliteQueue:
    """This process's work queue (the one `stores()` holds, so one database connection per thread)."""
    queue = stores().queue
    if not isinstance(queue, SqliteQueue):
        raise ConfigurationError("the one-machine runtime needs GMP_STORAGE=sqlite")
    return queue


def sqlite_messages() -> SqliteMessages:
    """This process's messages port, with its change log and expiry."""
    messages = stores().messages
    if not isinstance(messages, SqliteMessages):
        raise ConfigurationError("the one-machine runtime needs GMP_STORAGE=sqlite")
    return messages


def sqlite_state() -> SqliteState:
    """This process's state ports, with the retention sweep of the tables DynamoDB's TTL empties on AWS."""
    state = stores().service
    if not isinstance(state, SqliteState):
        raise ConfigurationError("the one-machine runtime needs GMP_STORAGE=sqlite")
    return state


def sqlite_large_files() -> SqliteLargeFiles:
    """This process's large files, with the sweep the bucket's lifecycle rules do on AWS."""
    files = stores().large_files
    if not isinstance(files, SqliteLargeFiles):
        raise ConfigurationError("the one-machine runtime needs GMP_STORAGE=sqlite")
    return files


def recover_leases() -> tuple[int, int, int]:
    """At start, with the data directory locked: give back the queue, reporter and SMTP session leases a killed
    runtime left (else its records wait out their visibility, its tenants' reports the 60 s lease and its
    accounts' sessions their lease). Returns the counts."""
    outbox, sessions = stores().outbox, stores().sessions
    if not isinstance(outbox, SqliteOutbox) or not isinstance(sessions, SqliteSessions):
        raise ConfigurationError("the one-machine runtime needs GMP_STORAGE=sqlite")
    return sqlite_queue().return_leased(), outbox.drop_leases(), sessions.drop_all()
