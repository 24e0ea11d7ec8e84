"""Encryption at rest: what the database holds, and what fails when stored bytes change."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from store_helpers import new_canary, raw_rows, update_raw

from pi_sandbox._errors import DecryptionError, InvalidSecretError, SecretNotFoundError
from pi_sandbox._store import KeyRing, SecretStoreError, SqlSecretStore
from pi_sandbox._store._crypto import (
    NONCE_BYTES,
    TAG_BYTES,
    SealedValue,
    associated_data,
    open_value,
    seal_value,
)
from pi_sandbox._store._models import SecretRow


def flip_bit(data: bytes, bit: int) -> bytes:
    """Return ``data`` with one bit inverted."""
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


class TestAssociatedData:
    """The associated data encodes the row unambiguously."""

    def test_field_boundaries_matter(self) -> None:
        """Moving characters between name and env var changes the encoding."""
        row_id = uuid.uuid4()

        first = associated_data(row_id, "ab", "C", 1)
        second = associated_data(row_id, "a", "BC", 1)

        assert first != second

    def test_every_field_is_bound(self) -> None:
        """Changing any one field changes the encoding."""
        row_id = uuid.uuid4()
        base = associated_data(row_id, "name", "ENV", 1)

        variants = [
            associated_data(uuid.uuid4(), "name", "ENV", 1),
            associated_data(row_id, "other", "ENV", 1),
            associated_data(row_id, "name", "OTHER", 1),
            associated_data(row_id, "name", "ENV", 2),
        ]

        assert all(variant != base for variant in variants)


class TestSealing:
    """AES-256-GCM with fresh nonces, checked without a database."""

    def test_every_bit_flip_fails(self, keyring: KeyRing) -> None:
        """Flipping any single bit of nonce, ciphertext or tag makes decryption fail."""
        row_id = uuid.uuid4()
        plaintext = b"a 32-byte value for the bit test"
        sealed = seal_value(keyring, row_id=row_id, name="token", env_var="TOKEN", plaintext=plaintext)

        def decrypt(candidate: SealedValue) -> bytes:
            return open_value(keyring, row_id=row_id, name="token", env_var="TOKEN", sealed=candidate)

        assert decrypt(sealed) == plaintext
        assert len(sealed.nonce) == NONCE_BYTES
        assert len(sealed.ciphertext) == len(plaintext) + TAG_BYTES

        survivors = []
        for bit in range(len(sealed.nonce) * 8):
            changed = SealedValue(sealed.key_version, flip_bit(sealed.nonce, bit), sealed.ciphertext)
            try:
                decrypt(changed)
            except DecryptionError:
                continue
            survivors.append(("nonce", bit))
        for bit in range(len(sealed.ciphertext) * 8):
            changed = SealedValue(sealed.key_version, sealed.nonce, flip_bit(sealed.ciphertext, bit))
            try:
                decrypt(changed)
            except DecryptionError:
                continue
            part = "tag" if bit >= 32 * 8 else "ciphertext"
            survivors.append((part, bit))

        assert survivors == []

    def test_ten_thousand_nonces_are_distinct(self, keyring: KeyRing) -> None:
        """Sealing one value 10,000 times draws 10,000 different nonces."""
        row_id = uuid.uuid4()

        nonces = {
            seal_value(keyring, row_id=row_id, name="token", env_var="TOKEN", plaintext=b"same").nonce
            for _ in range(10_000)
        }

        assert len(nonces) == 10_000

    def test_sealed_repr_hides_bytes(self, keyring: KeyRing) -> None:
        """A SealedValue's repr shows the key version and length only."""
        sealed = seal_value(keyring, row_id=uuid.uuid4(), name="t", env_var="T", plaintext=b"v")

        assert repr(sealed) == "SealedValue(key_version=1, ciphertext_bytes=17)"


class TestTampering:
    """Changes to stored rows make decryption fail, naming the secret."""

    def test_ciphertext_copied_to_another_row_fails(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """A ciphertext and nonce moved from one row to another do not decrypt there."""
        store.put("source", "source value", env_var="SOURCE")
        store.put("target", "target value", env_var="TARGET")
        source = raw_rows(raw_engine)["source"]

        update_raw(
            raw_engine,
            "target",
            nonce=source["nonce"],
            ciphertext=source["ciphertext"],
            key_version=source["key_version"],
        )

        with pytest.raises(DecryptionError, match="'target' failed authentication") as caught:
            store.get("target")
        assert caught.value.names == ("target",)
        assert store.get("source").reveal_text() == "source value"
        with pytest.raises(DecryptionError) as material_error:
            store.material()
        assert material_error.value.names == ("target",)

    @pytest.mark.parametrize(
        ("column", "new_value"),
        [("env_var", "SOMETHING_ELSE"), ("name", "renamed"), ("key_version", 1)],
    )
    def test_changed_bound_column_fails(
        self, store: SqlSecretStore, raw_engine: Engine, keyring: KeyRing, column: str, new_value: Any
    ) -> None:
        """Editing env var, name or key version in the database breaks authentication."""
        # Two keys, so that changing the key version points at a real key.
        store.rotate(keyring.with_new_key())
        store.put("token", "value", env_var="TOKEN")

        update_raw(raw_engine, "token", **{column: new_value})

        name = "renamed" if column == "name" else "token"
        with pytest.raises(DecryptionError, match=f"'{name}' failed authentication"):
            store.get(name)

    def test_bit_flips_in_stored_row_fail(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """One flipped bit in every byte of the stored nonce, ciphertext and tag makes get() fail."""
        store.put("token", "a value of some length", env_var="TOKEN")
        original = raw_rows(raw_engine)["token"]

        survivors = []
        for column in ("nonce", "ciphertext"):
            stored: bytes = original[column]
            for byte_index in range(len(stored)):
                bit = byte_index * 8 + byte_index % 8
                update_raw(raw_engine, "token", **{column: flip_bit(stored, bit)})
                try:
                    store.get("token")
                except DecryptionError:
                    continue
                finally:
                    update_raw(raw_engine, "token", **{column: stored})
                survivors.append((column, bit))

        assert survivors == []
        assert store.get("token").reveal_text() == "a value of some length"

    def test_truncated_ciphertext_fails(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """A ciphertext shorter than its tag fails cleanly."""
        store.put("token", "value", env_var="TOKEN")

        update_raw(raw_engine, "token", ciphertext=b"short", nonce=b"\x00" * 3)

        with pytest.raises(DecryptionError, match="'token'"):
            store.get("token")


class TestNonces:
    """Every write of a value draws a new nonce."""

    @pytest.mark.slow
    def test_ten_thousand_writes_use_distinct_nonces(self, store: SqlSecretStore) -> None:
        """Writing one value 10,000 times stores 10,000 different nonces."""
        nonces: list[bytes] = []

        def record_nonce(mapper: Any, connection: Any, row: SecretRow) -> None:
            nonces.append(row.nonce)

        event.listen(SecretRow, "before_insert", record_nonce)
        event.listen(SecretRow, "before_update", record_nonce)
        try:
            for _ in range(10_000):
                store.put("token", "one value", env_var="TOKEN")
        finally:
            event.remove(SecretRow, "before_insert", record_nonce)
            event.remove(SecretRow, "before_update", record_nonce)

        assert len(nonces) == 10_000
        assert len(set(nonces)) == 10_000


class TestNothingLeaks:
    """Plaintext never reaches the database, logs, reprs or errors."""

    def test_sqlite_files_hold_no_plaintext(self, sqlite_url: str, tmp_path: Path, keyring: KeyRing) -> None:
        """Neither the database file nor its WAL contains a stored value."""
        canaries = [new_canary() for _ in range(5)]
        database = tmp_path / "secrets.db"
        wal = tmp_path / "secrets.db-wal"

        store = SqlSecretStore(sqlite_url, keyring)
        for index, canary in enumerate(canaries):
            store.put(f"canary-secret-{index}", canary, env_var=f"CANARY_{index}")
        store.put("canary-secret-0", canaries[0] + " updated", env_var="CANARY_0")
        while_open = database.read_bytes() + wal.read_bytes()
        store.close()
        after_close = database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

        # The reads do see stored rows: the names are there in clear.
        assert b"canary-secret-4" in while_open
        assert b"canary-secret-4" in after_close
        found = [canary for canary in canaries if canary.encode() in while_open + after_close]
        assert len(found) == 0

    @pytest.mark.postgresql
    def test_postgresql_columns_hold_no_plaintext(self, postgresql_url: str, keyring: KeyRing) -> None:
        """No column of any row, read raw or as text, contains a stored value."""
        canaries = [new_canary() for _ in range(5)]
        with SqlSecretStore(postgresql_url, keyring) as store:
            for index, canary in enumerate(canaries):
                store.put(f"canary-secret-{index}", canary, env_var=f"CANARY_{index}")

        engine = create_engine(postgresql_url)
        try:
            with engine.connect() as connection:
                raw = connection.execute(
                    text("SELECT nonce, ciphertext, name, env_var FROM pi_sandbox_secrets")
                ).all()
                as_text = (
                    connection.execute(text("SELECT t::text FROM pi_sandbox_secrets AS t")).scalars().all()
                )
        finally:
            engine.dispose()

        column_bytes = b"".join(
            bytes(value) if isinstance(value, bytes) else value.encode() for row in raw for value in row
        )
        row_text = "\n".join(as_text)
        assert b"canary-secret-4" in column_bytes
        assert "canary-secret-4" in row_text
        found = [
            canary
            for canary in canaries
            if canary.encode() in column_bytes or canary in row_text or canary.encode().hex() in row_text
        ]
        assert len(found) == 0

    def test_debug_logs_hold_no_plaintext(
        self, store: SqlSecretStore, raw_engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every store call, SQLAlchemy's statement log and the error paths log no value."""
        caplog.set_level(logging.DEBUG)
        # SQLAlchemy sets its own loggers to WARNING unless configured otherwise.
        caplog.set_level(logging.DEBUG, logger="sqlalchemy")
        canary = new_canary()

        store.put("token", canary, env_var="TOKEN", kind="llm")
        store.put("token", canary, env_var="TOKEN", kind="llm")
        store.get("token")
        store.list()
        store.material()
        store.disable("token")
        store.enable("token")
        store.rotate(store.keyring.with_new_key())
        with pytest.raises(InvalidSecretError):
            store.put("token", canary + "\x00", env_var="TOKEN")
        update_raw(raw_engine, "token", env_var="MOVED")
        with pytest.raises(DecryptionError):
            store.material()
        with pytest.raises(SecretNotFoundError):
            store.get("missing")

        assert any(record.name == "pi_sandbox.store" for record in caplog.records)
        assert any(record.name.startswith("sqlalchemy.engine") for record in caplog.records)
        leaked = [record.name for record in caplog.records if canary in record.getMessage()]
        assert leaked == []
        assert (canary in caplog.text) is False

    def test_values_hidden_from_repr_and_str(self, store: SqlSecretStore) -> None:
        """Returned values and material show only that a value is set."""
        canary = new_canary()
        store.put("token", canary, env_var="TOKEN")

        shown = " ".join(
            [
                repr(store.get("token")),
                str(store.get("token")),
                repr(store.material()),
                str(dict(store.material())),
                repr(store.list()),
                repr(store),
            ]
        )

        assert "TOKEN" in shown
        assert (canary in shown) is False

    def test_database_errors_carry_no_parameters(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """A failed statement raises SecretStoreError with a summary, not SQL parameters."""
        canary = new_canary()
        with raw_engine.begin() as connection:
            connection.execute(text("DROP TABLE pi_sandbox_secrets"))

        with pytest.raises(SecretStoreError) as caught:
            store.put("token", canary, env_var="TOKEN")

        message = str(caught.value)
        assert "storing secret 'token' failed" in message
        assert "[parameters" not in message
        assert "[SQL" not in message
        assert (canary in message) is False
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__ is True
