"""Key rotation: all rows or none move to the new key, and the old key can then go."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from sqlalchemy import Engine, event
from store_helpers import CRASH_EXIT_STATUS, raw_rows, rotate_and_crash

from pi_sandbox._errors import DecryptionError
from pi_sandbox._store import KeyRing, SqlSecretStore


class SimulatedCrashError(Exception):
    """Raised by a test's statement hook to stop a rotation part-way."""


def fill(store: SqlSecretStore, count: int) -> dict[str, str]:
    """Store ``count`` secrets and return their values by name."""
    values = {f"secret-{index:03d}": f"value {index}\n" for index in range(count)}
    for index, (name, value) in enumerate(values.items()):
        store.put(name, value, env_var=f"SECRET_{index}")
    return values


def read_all(url: str, keyring: KeyRing) -> dict[str, str]:
    """Open the store with ``keyring`` and decrypt every secret."""
    with SqlSecretStore(url, keyring) as store:
        return {record.name: store.get(record.name).reveal_text() for record in store.list()}


class TestRotate:
    """rotate() re-encrypts every row with the new primary key."""

    def test_rotation_moves_every_row_to_new_key(self, store: SqlSecretStore, store_url: str) -> None:
        """Afterwards every row uses the new version and decrypts to the same value."""
        values = fill(store, 12)
        store.disable("secret-003")
        rotated = store.keyring.with_new_key()

        count = store.rotate(rotated)

        assert count == 12
        assert store.keyring is rotated
        assert {record.key_version for record in store.list()} == {2}
        assert read_all(store_url, rotated) == values

    def test_old_key_can_be_dropped_after_rotation(self, store: SqlSecretStore, store_url: str) -> None:
        """The new key alone decrypts everything; the old key alone decrypts nothing."""
        values = fill(store, 5)
        old = store.keyring
        rotated = old.with_new_key()

        store.rotate(rotated)

        assert read_all(store_url, rotated.without(1)) == values
        with SqlSecretStore(store_url, old) as old_store, pytest.raises(DecryptionError) as caught:
            old_store.material()
        assert len(caught.value.names) == 5

    def test_rotation_changes_nonces(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """Re-encryption draws new nonces and ciphertexts."""
        fill(store, 3)
        before = raw_rows(raw_engine)

        store.rotate(store.keyring.with_new_key())

        after = raw_rows(raw_engine)
        assert all(after[name]["nonce"] != before[name]["nonce"] for name in before)
        assert all(after[name]["ciphertext"] != before[name]["ciphertext"] for name in before)

    def test_keyring_without_old_key_changes_nothing(self, store: SqlSecretStore, store_url: str) -> None:
        """A key ring lacking the version in use fails, naming every secret, and no row changes."""
        values = fill(store, 4)
        only_new = KeyRing.generate(version=2)

        with pytest.raises(DecryptionError, match="the rotation changed nothing") as caught:
            store.rotate(only_new)

        assert caught.value.names == tuple(sorted(values))
        assert store.keyring.versions == (1,)
        assert {record.key_version for record in store.list()} == {1}
        assert read_all(store_url, store.keyring) == values

    def test_rotation_of_empty_store(self, store: SqlSecretStore) -> None:
        """Rotating an empty store succeeds and switches the key ring."""
        rotated = store.keyring.with_new_key()

        assert store.rotate(rotated) == 0
        assert store.put("token", "v", env_var="TOKEN").key_version == 2

    def test_rotate_requires_keyring(self, store: SqlSecretStore) -> None:
        """Passing raw key text is a type error, not a silent misuse."""
        with pytest.raises(TypeError, match="keyring must be a KeyRing"):
            store.rotate("1:abc")  # type: ignore[arg-type]


class TestInterruptedRotation:
    """A rotation stopped part-way leaves every row readable with both keys."""

    def test_failure_mid_rotation_rolls_back(self, store: SqlSecretStore, store_url: str) -> None:
        """An error after some rows were re-encrypted undoes all of them."""
        values = fill(store, 10)
        both = store.keyring.with_new_key()
        updates = 0

        # The fault hook: fail the sixth UPDATE, after five rows were rewritten.
        def fail_sixth_update(*args: Any) -> None:
            nonlocal updates
            if str(args[2]).lstrip().upper().startswith("UPDATE"):
                updates += 1
                if updates == 6:
                    raise SimulatedCrashError

        event.listen(store.engine, "before_cursor_execute", fail_sixth_update)
        try:
            with pytest.raises(SimulatedCrashError):
                store.rotate(both)
        finally:
            event.remove(store.engine, "before_cursor_execute", fail_sixth_update)

        assert updates == 6
        assert store.keyring.versions == (1,)
        assert {record.key_version for record in store.list()} == {1}
        assert read_all(store_url, both) == values

        assert store.rotate(both) == 10
        assert read_all(store_url, both.without(1)) == values

    def test_process_killed_mid_rotation(self, store: SqlSecretStore, store_url: str) -> None:
        """A process that dies during a rotation commits nothing; both keys read every row."""
        values = fill(store, 20)
        both = store.keyring.with_new_key()
        context = multiprocessing.get_context("spawn")

        child = context.Process(target=rotate_and_crash, args=(store_url, both.export(), 11))
        child.start()
        child.join(timeout=120)

        assert child.exitcode == CRASH_EXIT_STATUS
        assert {record.key_version for record in store.list()} == {1}
        assert read_all(store_url, both) == values
        assert store.rotate(both) == 20
        assert read_all(store_url, both.without(1)) == values
