"""Schema migrations: new databases, older schemas upgraded, newer schemas refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from pi_sandbox._errors import SchemaVersionError
from pi_sandbox._store import KeyRing, SqlSecretStore
from pi_sandbox._store._crypto import seal_value
from pi_sandbox._store._database import create_store_engine
from pi_sandbox._store._models import Base
from pi_sandbox._store._schema import VERSION_TABLE, current_revision, head_revision, upgrade_schema

FIRST_REVISION = "0001"


def revision_of(engine: Engine) -> str | None:
    """Return the schema revision recorded in the database."""
    with engine.connect() as connection:
        return current_revision(connection)


def insert_raw_secret(engine: Engine, keyring: KeyRing, name: str, env_var: str, value: bytes) -> None:
    """Insert a correctly encrypted row with plain SQL, as an older pi-sandbox would have."""
    row_id = uuid.uuid4()
    sealed = seal_value(keyring, row_id=row_id, name=name, env_var=env_var, plaintext=value)
    now = datetime.now(UTC)
    row_id_text = row_id.hex if engine.dialect.name == "sqlite" else str(row_id)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO pi_sandbox_secrets (id, name, env_var, kind, enabled, key_version, nonce, "
                "ciphertext, created_at, updated_at) VALUES (:id, :name, :env_var, NULL, :enabled, "
                ":key_version, :nonce, :ciphertext, :now, :now)"
            ),
            {
                "id": row_id_text,
                "name": name,
                "env_var": env_var,
                "enabled": True,
                "key_version": sealed.key_version,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "now": now,
            },
        )


class TestNewDatabase:
    """Opening an empty database creates the newest schema."""

    def test_new_database_is_at_head(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """The version table records the newest revision and the secrets table exists."""
        tables = set(inspect(raw_engine).get_table_names())

        assert revision_of(raw_engine) == head_revision()
        assert {"pi_sandbox_secrets", VERSION_TABLE} <= tables
        assert "alembic_version" not in tables

    def test_models_match_migrations(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """Autogenerate finds no difference between the models and the migrated schema."""
        with raw_engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            differences = compare_metadata(context, Base.metadata)

        assert differences == []

    def test_reopening_keeps_data(self, store_url: str, keyring: KeyRing) -> None:
        """A second open at the newest revision changes nothing."""
        with SqlSecretStore(store_url, keyring) as store:
            store.put("token", "value", env_var="TOKEN")

        with SqlSecretStore(store_url, keyring) as store:
            assert store.get("token").reveal_text() == "value"


class TestOlderSchema:
    """A database left at an older revision is upgraded when the store opens it."""

    def test_older_schema_is_upgraded_with_data(self, store_url: str, keyring: KeyRing) -> None:
        """Rows written under revision 0001 survive the upgrade and decrypt."""
        engine = create_store_engine(store_url)
        try:
            upgrade_schema(engine, target=FIRST_REVISION)
            assert revision_of(engine) == FIRST_REVISION
            insert_raw_secret(engine, keyring, "legacy", "LEGACY_TOKEN", b"legacy value\n")
        finally:
            engine.dispose()

        with SqlSecretStore(store_url, keyring) as store:
            value = store.get("legacy").reveal_text()
            revision = revision_of(store.engine)

        assert value == "legacy value\n"
        assert revision == head_revision()

    def test_upgrade_adds_enabled_env_var_index(self, store_url: str, keyring: KeyRing) -> None:
        """After the upgrade the database itself rejects a second enabled row for one variable."""
        engine = create_store_engine(store_url)
        try:
            upgrade_schema(engine, target=FIRST_REVISION)
            insert_raw_secret(engine, keyring, "first", "TOKEN", b"1")
            insert_raw_secret(engine, keyring, "second", "OTHER", b"2")
        finally:
            engine.dispose()

        with SqlSecretStore(store_url, keyring) as store:
            with pytest.raises(IntegrityError):
                insert_raw_secret(store.engine, keyring, "third", "TOKEN", b"3")
            assert [record.name for record in store.list()] == ["first", "second"]


class TestNewerSchema:
    """A revision this code does not know means a newer pi-sandbox wrote the database."""

    def test_unknown_revision_is_refused(
        self, store: SqlSecretStore, store_url: str, keyring: KeyRing
    ) -> None:
        """Opening raises SchemaVersionError naming both revisions and what to do; nothing changes."""
        store.put("token", "value", env_var="TOKEN")
        with store.engine.begin() as connection:
            connection.execute(
                text(f"UPDATE {VERSION_TABLE} SET version_num = :future"),  # noqa: S608
                {"future": "0099_future"},
            )

        with pytest.raises(SchemaVersionError) as caught:
            SqlSecretStore(store_url, keyring)

        message = str(caught.value)
        assert "'0099_future'" in message
        assert f"'{head_revision()}'" in message
        assert "Upgrade pi-sandbox" in message
        assert revision_of(store.engine) == "0099_future"
