"""Database engines for the secret store, and translation of their errors."""

from __future__ import annotations

import logging
from typing import Any, Final

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from .._errors import SecretStoreError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "WRITE_OPTION",
    "SecretStoreError",
    "WriteConflictError",
    "create_store_engine",
    "describe_url",
    "translate_error",
]

logger = logging.getLogger("pi_sandbox.store")

# How long an SQLite connection waits for another writer's lock before it
# fails with "database is locked". Writes hold the lock for milliseconds, so
# this only runs out when a writer hangs.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# Execution option that marks a transaction as a writer: on SQLite it starts
# with BEGIN IMMEDIATE, so it takes the write lock before reading and cannot
# fail later with a stale snapshot.
WRITE_OPTION: Final = "pi_sandbox_write"
SUPPORTED_BACKENDS: Final = ("sqlite", "postgresql")


class WriteConflictError(SecretStoreError):
    """A write broke a uniqueness rule because another writer got there first."""


def describe_url(url: URL) -> str:
    """Return ``url`` as text with its password hidden."""
    return url.render_as_string(hide_password=True)


def create_store_engine(url: str | URL) -> Engine:
    """Create an engine for ``url`` set up for the secret store.

    SQLite connections get WAL journaling, a busy timeout and SQLAlchemy-issued
    BEGIN statements (so reads are repeatable and writers take the lock up
    front). Statement parameters never appear in SQLAlchemy's logs or errors.

    Raises:
        SecretStoreError: The URL is malformed or names an unsupported database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        msg = (
            "the secret store URL is malformed; use for example sqlite:////path/secrets.db "
            "or postgresql+psycopg://user:password@host/database"
        )
        raise SecretStoreError(msg) from None

    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        msg = (
            f"the secret store does not support {backend!r} databases ({describe_url(parsed)}); "
            "use an sqlite:// or postgresql:// URL"
        )
        raise SecretStoreError(msg)

    try:
        if backend == "sqlite":
            return _create_sqlite_engine(parsed)
        return create_engine(parsed, hide_parameters=True, pool_pre_ping=True)
    except (ImportError, SQLAlchemyError) as error:
        msg = f"cannot create a database engine for {describe_url(parsed)}: {_summarize(error)}"
        if isinstance(error, ImportError):
            msg += "; install the driver, for PostgreSQL: pip install 'pi-sandbox[postgresql]'"
        raise SecretStoreError(msg) from None


def _create_sqlite_engine(url: URL) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    options: dict[str, Any] = {"hide_parameters": True}
    if in_memory:
        # One shared connection, or every pooled connection would see its own
        # empty database.
        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _configure_connection(dbapi_connection: Any, connection_record: Any) -> None:
        # Stop the sqlite3 module from issuing BEGIN itself; the "begin"
        # listener below does it, for reads too.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def translate_error(error: SQLAlchemyError, action: str, where: str) -> SecretStoreError:
    """Turn a SQLAlchemy error into a `SecretStoreError` that carries no parameters.

    Args:
        error: The error SQLAlchemy raised.
        action: What the store was doing, for example ``"storing secret 'x'"``.
        where: The database, as `describe_url` renders it.
    """
    summary = _summarize(error)
    if isinstance(error, IntegrityError):
        return WriteConflictError(f"{action} conflicted with another write on {where}: {summary}")
    return SecretStoreError(f"{action} failed on the secret store {where}: {summary}")


def _summarize(error: BaseException) -> str:
    """Return the error's type and the first line of the driver's message.

    SQLAlchemy's own text appends the statement and its parameters, and
    PostgreSQL's DETAIL lines can quote a whole row, so neither is used.
    """
    original = error.orig if isinstance(error, DBAPIError) else error
    diagnostic = getattr(original, "diag", None)
    primary = getattr(diagnostic, "message_primary", None)
    text = primary if isinstance(primary, str) and primary else str(original)
    first_line = text.strip().splitlines()[0] if text.strip() else "no message"
    return f"{type(original).__name__}: {first_line}"
