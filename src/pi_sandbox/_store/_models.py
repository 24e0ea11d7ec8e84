"""The secret store's tables, as the newest migration leaves them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import (
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["SECRETS_TABLE", "Base", "SecretRow", "UtcDateTime"]

SECRETS_TABLE: Final = "pi_sandbox_secrets"

# Fixed constraint names keep migrations identical on SQLite and PostgreSQL.
_NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of the secret store's tables."""

    metadata = MetaData(naming_convention=_NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no time zone, so values read from it are marked as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            msg = "timestamps for the secret store must be timezone-aware"
            raise ValueError(msg)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class SecretRow(Base):
    """One stored secret: metadata in clear, the value as AES-256-GCM ciphertext.

    ``ciphertext`` holds the encrypted value followed by the 16-byte GCM tag.
    The associated data binds it to ``id``, ``name``, ``env_var`` and
    ``key_version``, so changing any of them makes decryption fail.
    """

    __tablename__ = SECRETS_TABLE
    __table_args__ = (
        # One enabled secret per environment variable, also under concurrent
        # writers. Disabled secrets may share a variable.
        Index(
            "ix_pi_sandbox_secrets_enabled_env_var",
            "env_var",
            unique=True,
            sqlite_where=text("enabled"),
            postgresql_where=text("enabled"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    env_var: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str | None] = mapped_column(String(64))
    enabled: Mapped[bool]
    key_version: Mapped[int] = mapped_column(Integer)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(12))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
