"""Writes that must outlive one lost database connection, and what to say when the database is gone.

Django checks a kept connection only when a request starts (CONN_HEALTH_CHECKS).
A connection cut while a request waits on someone else (a PostgreSQL restart or
failover, a proxy's idle timeout, pg_terminate_backend during a slow upstream
call) fails the next query. Most writes may fail then: the caller is told and
tries again. The writes that end a paid call may not: by then the upstream has
answered (and been paid) and the payer's money may have moved, so losing them
to a connection would charge for a result nobody receives. Those writes run
through `write_surviving_a_lost_connection`: once more, on a fresh connection.
"""

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a connection that is gone (or a database that cannot be reached) raises through Django.
CONNECTION_ERRORS = (OperationalError, InterfaceError)


class DatabaseUnavailable(Exception):
    """The database could not take a write, even on a fresh connection."""


def connection_dropped() -> bool:
    """Close this thread's connection after one of CONNECTION_ERRORS, so the next query opens a new one;
    False (nothing done) inside a caller's transaction, which the error has doomed anyway."""
    if connection.in_atomic_block:
        return False
    connection.close()
    return True


def write_surviving_a_lost_connection(write: Callable[[], T], *, done: Callable[[], T | None] | None = None) -> T:
    """`write()` (its own transaction, idempotent or guarded by `done`); after a lost connection, once more.

    `done()` is asked first on the fresh connection: a COMMIT cut off midway
    may have committed, and then it returns what `write()` would have (None
    when the write is still to do). Raises DatabaseUnavailable when the second
    attempt fails too. Inside a caller's transaction nothing is retried (it
    is lost with its connection): the error is raised as it came.
    """
    try:
        return write()
    except CONNECTION_ERRORS as error:
        if not connection_dropped():
            raise
        logger.warning("the database connection failed during a write (%s: %s); writing again on a fresh one",
                       type(error).__name__, error)
    try:
        if done is not None:
            already = done()
            if already is not None:
                return already
        return write()
    except CONNECTION_ERRORS as error:
        connection_dropped()
        raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
