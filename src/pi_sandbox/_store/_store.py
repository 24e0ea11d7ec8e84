"""The secret store interface and its SQLAlchemy implementation."""

from __future__ import annotations

import abc
import builtins
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self, TypeVar

import attrs
from sqlalchemy import URL, Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .._errors import DecryptionError, InvalidSecretError, SecretNotFoundError
from .._secrets import SecretMaterial, SecretValue, validate_secret_env_name
from ._crypto import SealedValue, open_value, seal_value
from ._database import (
    WRITE_OPTION,
    SecretStoreError,
    WriteConflictError,
    create_store_engine,
    describe_url,
    translate_error,
)
from ._keyring import KeyRing
from ._models import SECRETS_TABLE, SecretRow
from ._schema import upgrade_schema
from ._validation import validate_kind, validate_secret_name, validate_secret_value

__all__ = ["SecretRecord", "SecretStore", "SqlSecretStore"]

logger = logging.getLogger("pi_sandbox.store")

_T = TypeVar("_T")
# A write that loses a uniqueness race is retried. The retry reads the other
# writer's row and either updates it or raises a clear InvalidSecretError.
_WRITE_ATTEMPTS: Final = 3


@attrs.frozen
class SecretRecord:
    """The metadata of one stored secret, never its value.

    Attributes:
        name: The secret's name in the store.
        env_var: The environment variable the sandbox receives it under.
        kind: A free label for filtering, such as ``"llm"``, or ``None``.
        enabled: Whether `SecretStore.material` delivers it.
        key_version: The version of the key that encrypted the stored value.
        created_at: When the secret was first stored (UTC).
        updated_at: When its value or metadata last changed (UTC).
    """

    name: str
    env_var: str
    kind: str | None
    enabled: bool
    key_version: int
    created_at: datetime
    updated_at: datetime


class SecretStore(abc.ABC):
    """Encrypted storage of named secrets, each delivered under an environment variable.

    Implementations decrypt only in `get` and `material`. Values never appear
    in reprs, logs or error messages.
    """

    @abc.abstractmethod
    def put(
        self,
        name: str,
        value: str | bytes | SecretValue,
        *,
        env_var: str,
        kind: str | None = None,
        enabled: bool = True,
    ) -> SecretRecord:
        """Store a secret under ``name``, replacing its value and metadata if it exists.

        Args:
            name: 1 to 64 letters, digits, ``.``, ``_`` or ``-``, starting with
                a letter or digit.
            value: The secret; ``str`` is stored as UTF-8. Non-empty, no NUL
                byte, at most 500 KiB.
            env_var: The environment variable the sandbox receives it under;
                reserved names such as ``PATH`` or ``LD_PRELOAD`` are rejected.
            kind: An optional label that `material` can filter on.
            enabled: Whether `material` delivers it. No two enabled secrets
                may share ``env_var``.

        Raises:
            InvalidSecretError: An argument breaks a rule; nothing was written.
        """

    @abc.abstractmethod
    def get(self, name: str) -> SecretValue:
        """Decrypt and return one secret, enabled or not.

        Raises:
            SecretNotFoundError: No secret has this name.
            DecryptionError: The secret's key is missing or its row was altered.
        """

    @abc.abstractmethod
    def list(self) -> builtins.list[SecretRecord]:
        """Return the metadata of every secret, sorted by name, without decrypting."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete one secret.

        Raises:
            SecretNotFoundError: No secret has this name.
        """

    @abc.abstractmethod
    def enable(self, name: str) -> SecretRecord:
        """Let `material` deliver this secret again.

        Raises:
            SecretNotFoundError: No secret has this name.
            InvalidSecretError: Another enabled secret uses the same env var.
        """

    @abc.abstractmethod
    def disable(self, name: str) -> SecretRecord:
        """Keep the secret stored but stop `material` from delivering it.

        Raises:
            SecretNotFoundError: No secret has this name.
        """

    @abc.abstractmethod
    def material(
        self, names: Iterable[str] | None = None, kinds: Iterable[str] | None = None
    ) -> SecretMaterial:
        """Decrypt the enabled secrets a sandbox should receive.

        Args:
            names: Only these secrets; each must exist. Disabled ones are skipped.
            kinds: Only secrets whose kind is one of these.

        Raises:
            SecretNotFoundError: A name in ``names`` does not exist.
            DecryptionError: Any selected secret cannot be decrypted. Nothing is
                returned then, and the error's ``names`` lists every failure.
        """

    @abc.abstractmethod
    def rotate(self, keyring: KeyRing) -> int:
        """Re-encrypt every secret with the primary key of ``keyring``, all or nothing.

        ``keyring`` must also hold every key version the stored secrets use,
        because each one is decrypted first. Afterwards the store uses
        ``keyring``.

        Returns:
            The number of secrets re-encrypted.

        Raises:
            DecryptionError: A secret cannot be decrypted with ``keyring``;
                nothing was changed.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the database connections; later calls raise an error."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SqlSecretStore(SecretStore):
    """A `SecretStore` in an SQLite or PostgreSQL database, through SQLAlchemy.

    Opening it upgrades an older schema and rejects a newer one. The store is
    safe to share between threads; open one per process.

    Args:
        url: An SQLAlchemy URL such as ``sqlite:////path/secrets.db`` or
            ``postgresql+psycopg://user:password@host/database``.
        keyring: The keys; its primary key encrypts new values.

    Raises:
        SchemaVersionError: A newer pi-sandbox wrote the database.
        SecretStoreError: The database is unsupported, unreachable or failed.
    """

    def __init__(self, url: str | URL, keyring: KeyRing) -> None:
        _require_keyring(keyring)
        engine = create_store_engine(url)
        try:
            upgrade_schema(engine)
            self._attach(engine, keyring)
        except BaseException:
            engine.dispose()
            raise

    @classmethod
    def _from_migrated_engine(cls, engine: Engine, keyring: KeyRing) -> SqlSecretStore:
        """Build a store on an engine that `upgrade_schema` has already prepared."""
        store = cls.__new__(cls)
        store._attach(engine, keyring)
        return store

    def _attach(self, engine: Engine, keyring: KeyRing) -> None:
        _require_keyring(keyring)
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._where = describe_url(engine.url)
        self._keyring = keyring
        self._closed = False
        self._warn_about_missing_keys()
        logger.debug("opened secret store %s with %r", self._where, keyring)

    @property
    def keyring(self) -> KeyRing:
        """The key ring in use; `rotate` replaces it."""
        return self._keyring

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for diagnostics and tests."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL with its password hidden."""
        return self._where

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"SqlSecretStore({self._where!r}, keyring={self._keyring!r}{state})"

    def put(
        self,
        name: str,
        value: str | bytes | SecretValue,
        *,
        env_var: str,
        kind: str | None = None,
        enabled: bool = True,
    ) -> SecretRecord:
        name = validate_secret_name(name)
        validate_secret_env_name(env_var)
        kind = validate_kind(kind)
        plaintext = validate_secret_value(name, value)
        if not isinstance(enabled, bool):
            msg = f"enabled for secret {name!r} must be True or False, not {enabled!r}"
            raise InvalidSecretError(msg)
        keyring = self._keyring

        def store_row(session: Session) -> SecretRecord:
            if enabled:
                _check_env_var_free(session, env_var, name)
            now = datetime.now(UTC)
            row = session.scalars(
                select(SecretRow).where(SecretRow.name == name).with_for_update()
            ).one_or_none()
            if row is None:
                row = SecretRow(id=uuid.uuid4(), name=name, created_at=now)
                session.add(row)

            sealed = seal_value(keyring, row_id=row.id, name=name, env_var=env_var, plaintext=plaintext)
            row.env_var = env_var
            row.kind = kind
            row.enabled = enabled
            row.key_version = sealed.key_version
            row.nonce = sealed.nonce
            row.ciphertext = sealed.ciphertext
            row.updated_at = now
            session.flush()
            return _to_record(row)

        record = self._write(f"storing secret {name!r}", store_row)
        logger.debug(
            "stored secret %r for %s with key version %d",
            name,
            env_var,
            record.key_version,
            extra={"pi_sandbox.secret": name},
        )
        return record

    def get(self, name: str) -> SecretValue:
        name = validate_secret_name(name)
        with self._session(f"reading secret {name!r}") as session:
            row = session.scalars(select(SecretRow).where(SecretRow.name == name)).one_or_none()
            if row is None:
                raise SecretNotFoundError(name)
            row_id, env_var, sealed = row.id, row.env_var, _sealed(row)

        plaintext = open_value(self._keyring, row_id=row_id, name=name, env_var=env_var, sealed=sealed)
        return SecretValue(plaintext)

    def list(self) -> builtins.list[SecretRecord]:
        # Plain columns rather than SecretRow objects: the ciphertext is never
        # read, and building records from tuples is several times faster.
        with self._session("listing secrets") as session:
            rows = session.execute(select(*_RECORD_COLUMNS).order_by(SecretRow.name)).all()
        return [SecretRecord(*row) for row in rows]

    def delete(self, name: str) -> None:
        name = validate_secret_name(name)

        def delete_row(session: Session) -> None:
            row = session.scalars(
                select(SecretRow).where(SecretRow.name == name).with_for_update()
            ).one_or_none()
            if row is None:
                raise SecretNotFoundError(name)
            session.delete(row)

        self._write(f"deleting secret {name!r}", delete_row)
        logger.debug("deleted secret %r", name, extra={"pi_sandbox.secret": name})

    def enable(self, name: str) -> SecretRecord:
        return self._set_enabled(name, enabled=True)

    def disable(self, name: str) -> SecretRecord:
        return self._set_enabled(name, enabled=False)

    def _set_enabled(self, name: str, *, enabled: bool) -> SecretRecord:
        name = validate_secret_name(name)

        def update_row(session: Session) -> SecretRecord:
            row = session.scalars(
                select(SecretRow).where(SecretRow.name == name).with_for_update()
            ).one_or_none()
            if row is None:
                raise SecretNotFoundError(name)
            if enabled and not row.enabled:
                _check_env_var_free(session, row.env_var, name)
            if row.enabled != enabled:
                row.enabled = enabled
                row.updated_at = datetime.now(UTC)
                session.flush()
            return _to_record(row)

        action = "enabling" if enabled else "disabling"
        record = self._write(f"{action} secret {name!r}", update_row)
        logger.debug("%s secret %r", action, name, extra={"pi_sandbox.secret": name})
        return record

    def material(
        self, names: Iterable[str] | None = None, kinds: Iterable[str] | None = None
    ) -> SecretMaterial:
        requested_names = _validated_filter(names, "names", validate_secret_name)
        requested_kinds = _validated_filter(kinds, "kinds", validate_kind)

        with self._session("reading secret material") as session:
            if requested_names is not None:
                found = set(
                    session.scalars(select(SecretRow.name).where(SecretRow.name.in_(requested_names)))
                )
                missing = sorted(set(requested_names) - found)
                if missing:
                    raise SecretNotFoundError(missing[0])

            statement = select(SecretRow).where(SecretRow.enabled).order_by(SecretRow.name)
            if requested_names is not None:
                statement = statement.where(SecretRow.name.in_(requested_names))
            if requested_kinds is not None:
                statement = statement.where(SecretRow.kind.in_(requested_kinds))
            stored = [(row.id, row.name, row.env_var, _sealed(row)) for row in session.scalars(statement)]

        values: dict[str, SecretValue] = {}
        failures: builtins.list[DecryptionError] = []
        for row_id, name, env_var, sealed in stored:
            try:
                plaintext = open_value(
                    self._keyring, row_id=row_id, name=name, env_var=env_var, sealed=sealed
                )
            except DecryptionError as error:
                failures.append(error)
                continue
            values[env_var] = SecretValue(plaintext)

        if failures:
            raise _combined_decryption_error(failures, len(stored), "so no secrets were returned")
        logger.debug("decrypted %d secrets for a sandbox", len(values))
        return SecretMaterial(values)

    def rotate(self, keyring: KeyRing) -> int:
        _require_keyring(keyring)

        def reencrypt_rows(session: Session) -> int:
            if session.get_bind().dialect.name == "postgresql":
                # Writers that started before the rotation finish first, and
                # new ones wait, so no row escapes re-encryption.
                session.execute(text(f"LOCK TABLE {SECRETS_TABLE} IN SHARE ROW EXCLUSIVE MODE"))
            rows = session.scalars(select(SecretRow).order_by(SecretRow.name)).all()

            # Decrypt everything before the first write, so that a missing key
            # stops the rotation with nothing changed.
            plaintexts: builtins.list[bytes] = []
            failures: builtins.list[DecryptionError] = []
            for row in rows:
                try:
                    plaintexts.append(
                        open_value(
                            keyring,
                            row_id=row.id,
                            name=row.name,
                            env_var=row.env_var,
                            sealed=_sealed(row),
                        )
                    )
                except DecryptionError as error:
                    failures.append(error)
            if failures:
                raise _combined_decryption_error(
                    failures,
                    len(rows),
                    "so the rotation changed nothing; pass a key ring that holds the old "
                    "keys as well as the new one",
                )

            for row, plaintext in zip(rows, plaintexts, strict=True):
                sealed = seal_value(
                    keyring, row_id=row.id, name=row.name, env_var=row.env_var, plaintext=plaintext
                )
                row.key_version = sealed.key_version
                row.nonce = sealed.nonce
                row.ciphertext = sealed.ciphertext
                # One UPDATE per row: the transaction, not the statement
                # boundary, decides what a failure leaves behind.
                session.flush()
            return len(rows)

        count = self._write("rotating the encryption key", reencrypt_rows)
        self._keyring = keyring
        logger.info(
            "re-encrypted %d secrets in %s with key version %d",
            count,
            self._where,
            keyring.primary_version,
        )
        return count

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._engine.dispose()
        logger.debug("closed secret store %s", self._where)

    @contextlib.contextmanager
    def _session(self, action: str, *, write: bool = False) -> Iterator[Session]:
        """Open a session in one transaction, translating database errors."""
        if self._closed:
            msg = f"the secret store {self._where} is closed; open it again"
            raise SecretStoreError(msg)
        engine = self._write_engine if write else self._engine
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as error:
            raise translate_error(error, action, self._where) from None

    def _write(self, action: str, operation: Callable[[Session], _T]) -> _T:
        """Run ``operation`` in a write transaction, retrying lost uniqueness races."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._session(action, write=True) as session:
                    return operation(session)
            except WriteConflictError:
                if attempt == _WRITE_ATTEMPTS:
                    raise
                logger.debug("retrying %s after a write conflict (attempt %d)", action, attempt)
        msg = "unreachable: the last attempt returns or raises"
        raise AssertionError(msg)

    def _warn_about_missing_keys(self) -> None:
        with self._session("checking key versions") as session:
            in_use = set(session.scalars(select(SecretRow.key_version).distinct()))
        missing = sorted(version for version in in_use if version not in self._keyring)
        if missing:
            logger.warning(
                "secrets in %s use key versions %s, which %r lacks; reading them fails "
                "until those keys are configured",
                self._where,
                missing,
                self._keyring,
            )


# The columns of a SecretRecord, in the order of its fields.
_RECORD_COLUMNS: Final = (
    SecretRow.name,
    SecretRow.env_var,
    SecretRow.kind,
    SecretRow.enabled,
    SecretRow.key_version,
    SecretRow.created_at,
    SecretRow.updated_at,
)


def count_secrets(engine: Engine) -> int:
    """Return how many secrets the database holds, without a key ring."""
    try:
        with Session(engine) as session:
            return session.scalar(select(func.count()).select_from(SecretRow)) or 0
    except SQLAlchemyError as error:
        raise translate_error(error, "counting secrets", describe_url(engine.url)) from None


def _require_keyring(keyring: object) -> None:
    if not isinstance(keyring, KeyRing):
        msg = f"keyring must be a KeyRing, not {type(keyring).__name__}; see KeyRing.from_string"
        raise TypeError(msg)


def _check_env_var_free(session: Session, env_var: str, name: str) -> None:
    """Raise `InvalidSecretError` if an enabled secret other than ``name`` uses ``env_var``."""
    other = session.scalars(
        select(SecretRow.name).where(SecretRow.env_var == env_var, SecretRow.enabled, SecretRow.name != name)
    ).first()
    if other is not None:
        msg = (
            f"environment variable {env_var} is already used by enabled secret {other!r}; "
            f"disable or delete {other!r}, or choose another variable for {name!r}"
        )
        raise InvalidSecretError(msg)


def _validated_filter(
    items: Iterable[str] | None, label: str, validate: Callable[[str], object]
) -> builtins.list[str] | None:
    if items is None:
        return None
    if isinstance(items, str | bytes):
        msg = f"{label} must be a list of strings, not a single string"
        raise InvalidSecretError(msg)
    checked = builtins.list(items)
    for item in checked:
        validate(item)
    return checked


def _sealed(row: SecretRow) -> SealedValue:
    return SealedValue(key_version=row.key_version, nonce=row.nonce, ciphertext=row.ciphertext)


def _to_record(row: SecretRow) -> SecretRecord:
    return SecretRecord(
        name=row.name,
        env_var=row.env_var,
        kind=row.kind,
        enabled=row.enabled,
        key_version=row.key_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _combined_decryption_error(
    failures: builtins.list[DecryptionError], total: int, consequence: str
) -> DecryptionError:
    names = tuple(name for failure in failures for name in failure.names)
    details = "; ".join(str(failure) for failure in failures)
    msg = f"{len(failures)} of {total} secrets cannot be decrypted, {consequence}: {details}"
    return DecryptionError(msg, names)
