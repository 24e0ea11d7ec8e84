"""The secret store's schema: Alembic migrations shipped in the package, run on open."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .._errors import SchemaVersionError
from ._database import WRITE_OPTION, describe_url, translate_error

__all__ = ["MIGRATIONS_DIR", "VERSION_TABLE", "current_revision", "head_revision", "upgrade_schema"]

logger = logging.getLogger("pi_sandbox.store")

MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"
# Not Alembic's default "alembic_version", so the store can share a database
# with an application that runs its own migrations.
VERSION_TABLE: Final = "pi_sandbox_alembic_version"
# Key for pg_advisory_xact_lock, so that processes opening one PostgreSQL
# database at the same moment migrate it one after the other. It is the
# ASCII of "pisbxmig" read as a signed 64-bit integer.
_POSTGRESQL_MIGRATION_LOCK: Final = int.from_bytes(b"pisbxmig", "big", signed=True)


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def head_revision() -> str:
    """Return the newest schema revision this version of pi-sandbox knows."""
    head = _script_directory().get_current_head()
    if head is None:
        msg = f"no migrations found in {MIGRATIONS_DIR}"
        raise RuntimeError(msg)
    return head


def current_revision(connection: Connection) -> str | None:
    """Return the database's schema revision, or ``None`` if it has none yet."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    heads = context.get_current_heads()
    return heads[0] if heads else None


def upgrade_schema(engine: Engine, *, target: str = "head") -> None:
    """Bring the database's schema to ``target``, or reject a schema newer than this code.

    Runs in one transaction that holds the write lock (SQLite) or an advisory
    lock (PostgreSQL), so concurrent openers migrate once.

    Raises:
        SchemaVersionError: The database has a revision this code does not know.
        SecretStoreError: The database failed.
    """
    where = describe_url(engine.url)
    script = _script_directory()
    known = {revision.revision for revision in script.walk_revisions()}
    head = head_revision()

    try:
        with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _POSTGRESQL_MIGRATION_LOCK},
                )

            current = current_revision(connection)
            if current is not None and current not in known:
                raise _newer_schema_error(where, current, head)
            if current == head or (target != "head" and current == target):
                return

            logger.info(
                "upgrading the secret store schema on %s from %s to %s",
                where,
                current or "an empty database",
                head if target == "head" else target,
            )
            command.upgrade(_alembic_config(connection), target)
    except SQLAlchemyError as error:
        raise translate_error(error, "upgrading the schema", where) from None


def _newer_schema_error(where: str, current: str, head: str) -> SchemaVersionError:
    try:
        package_version = version("pi-sandbox")
    except PackageNotFoundError:
        package_version = "(not installed)"
    msg = (
        f"the secret store {where} has schema revision {current!r}, which this pi-sandbox "
        f"{package_version} does not know (its newest revision is {head!r}); a newer "
        "pi-sandbox wrote it. Upgrade pi-sandbox to the version that wrote the database, "
        "or open a different database"
    )
    return SchemaVersionError(msg)
