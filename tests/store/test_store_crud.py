"""Storing, reading, listing, enabling and deleting secrets, and the checks before each write."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from store_helpers import new_canary, raw_rows

from pi_sandbox._errors import InvalidSecretError, SecretNotFoundError
from pi_sandbox._secrets import MAX_SECRET_BYTES, SecretMaterial, SecretValue
from pi_sandbox._store import KeyRing, SecretRecord, SecretStoreError, SqlSecretStore


class TestPutAndGet:
    """put() stores a value that get() returns byte for byte."""

    @pytest.mark.parametrize(
        "value",
        [
            "sk-ant-api03-plain",
            "Grüße, 秘密, 🔑 — unicode",
            "line one\nline two\nline three",
            "trailing spaces   ",
            "trailing newlines\n\n",
            "\n leading newline and space",
            "tab\tand\rcarriage return",
            b"\xff\xfe non-UTF-8 bytes \x80",
            "x" * MAX_SECRET_BYTES,
            "é" * (MAX_SECRET_BYTES // 2),
        ],
        ids=[
            "ascii",
            "unicode",
            "inner-newlines",
            "trailing-spaces",
            "trailing-newlines",
            "leading-whitespace",
            "control-characters",
            "raw-bytes",
            "exactly-500-KiB-ascii",
            "exactly-500-KiB-two-byte-characters",
        ],
    )
    def test_value_round_trips_byte_exact(self, store: SqlSecretStore, value: str | bytes) -> None:
        """Every byte of the value survives storing and reading, including whitespace at the ends."""
        expected = value.encode("utf-8") if isinstance(value, str) else value

        store.put("token", value, env_var="TOKEN")
        returned = store.get("token")

        assert isinstance(returned, SecretValue)
        assert len(returned) == len(expected)
        assert returned.reveal() == expected

    def test_secret_value_argument_is_accepted(self, store: SqlSecretStore) -> None:
        """A SecretValue can be stored directly."""
        store.put("token", SecretValue("wrapped"), env_var="TOKEN")

        assert store.get("token").reveal_text() == "wrapped"

    def test_put_returns_metadata_record(self, store: SqlSecretStore) -> None:
        """The record names the secret, its variable and kind, and the key version."""
        before = datetime.now(UTC)

        record = store.put("anthropic", "sk-1", env_var="ANTHROPIC_API_KEY", kind="llm")

        assert isinstance(record, SecretRecord)
        assert record.name == "anthropic"
        assert record.env_var == "ANTHROPIC_API_KEY"
        assert record.kind == "llm"
        assert record.enabled is True
        assert record.key_version == 1
        assert record.created_at.tzinfo is not None
        assert record.created_at >= before.replace(microsecond=0)
        assert record.updated_at == record.created_at

    def test_put_existing_name_replaces_value_and_metadata(self, store: SqlSecretStore) -> None:
        """A second put updates the one row, keeping its creation time."""
        first = store.put("anthropic", "old", env_var="ANTHROPIC_API_KEY", kind="llm")

        second = store.put("anthropic", "new", env_var="CLAUDE_KEY")

        assert store.get("anthropic").reveal_text() == "new"
        assert [record.name for record in store.list()] == ["anthropic"]
        assert second.env_var == "CLAUDE_KEY"
        assert second.kind is None
        assert second.created_at == first.created_at
        assert second.updated_at >= first.updated_at

    def test_get_missing_name_raises_not_found(self, store: SqlSecretStore) -> None:
        """get() of an unknown name raises SecretNotFoundError naming it."""
        with pytest.raises(SecretNotFoundError, match="'nothing-here'") as caught:
            store.get("nothing-here")

        assert caught.value.name == "nothing-here"

    def test_get_returns_disabled_secret(self, store: SqlSecretStore) -> None:
        """Disabling stops delivery to sandboxes, not explicit reads."""
        store.put("token", "value", env_var="TOKEN", enabled=False)

        assert store.get("token").reveal_text() == "value"


class TestList:
    """list() returns metadata only, sorted by name."""

    def test_list_is_sorted_metadata(self, store: SqlSecretStore) -> None:
        """Records come back sorted by name, with their metadata."""
        store.put("zeta", "1", env_var="ZETA")
        store.put("alpha", "2", env_var="ALPHA", kind="git", enabled=False)

        records = store.list()

        assert [record.name for record in records] == ["alpha", "zeta"]
        assert records[0].kind == "git"
        assert records[0].enabled is False
        assert records[1].env_var == "ZETA"

    def test_list_of_empty_store(self, store: SqlSecretStore) -> None:
        """An empty store lists nothing."""
        assert store.list() == []

    def test_records_never_show_values(self, store: SqlSecretStore) -> None:
        """No record field, repr or str contains the value."""
        canary = new_canary()
        store.put("token", canary, env_var="TOKEN")

        text = repr(store.list()) + str(store.list()[0])

        assert canary not in text


class TestDelete:
    """delete() removes one secret."""

    def test_delete_removes_row(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """The row is gone from the database and get() no longer finds it."""
        store.put("token", "value", env_var="TOKEN")
        store.put("other", "value", env_var="OTHER")

        store.delete("token")

        assert set(raw_rows(raw_engine)) == {"other"}
        with pytest.raises(SecretNotFoundError):
            store.get("token")

    def test_delete_missing_name_raises_not_found(self, store: SqlSecretStore) -> None:
        """Deleting an unknown name raises SecretNotFoundError."""
        with pytest.raises(SecretNotFoundError):
            store.delete("never-stored")


class TestEnableDisable:
    """enable() and disable() decide what material() delivers."""

    def test_disable_hides_secret_from_material(self, store: SqlSecretStore) -> None:
        """A disabled secret stays listed but leaves the material."""
        store.put("token", "value", env_var="TOKEN")

        record = store.disable("token")

        assert record.enabled is False
        assert "TOKEN" not in store.material()
        assert store.list()[0].enabled is False

    def test_enable_restores_secret_to_material(self, store: SqlSecretStore) -> None:
        """Enabling again delivers the same value."""
        store.put("token", "value", env_var="TOKEN", enabled=False)

        record = store.enable("token")

        assert record.enabled is True
        assert store.material()["TOKEN"].reveal_text() == "value"

    def test_enable_rejects_env_var_taken_by_enabled_secret(self, store: SqlSecretStore) -> None:
        """Enabling a second secret for one variable fails and leaves it disabled."""
        store.put("first", "1", env_var="TOKEN")
        store.put("second", "2", env_var="TOKEN", enabled=False)

        with pytest.raises(InvalidSecretError, match="TOKEN is already used by enabled secret 'first'"):
            store.enable("second")

        assert {record.name: record.enabled for record in store.list()} == {"first": True, "second": False}

    def test_enable_and_disable_missing_name(self, store: SqlSecretStore) -> None:
        """Both raise SecretNotFoundError for an unknown name."""
        with pytest.raises(SecretNotFoundError):
            store.enable("missing")
        with pytest.raises(SecretNotFoundError):
            store.disable("missing")


class TestMaterial:
    """material() decrypts the enabled secrets for a sandbox."""

    def test_material_maps_env_vars_to_values(self, store: SqlSecretStore) -> None:
        """Every enabled secret appears under its variable, in name order."""
        store.put("b-github", "ghp-1", env_var="GITHUB_TOKEN", kind="git")
        store.put("a-anthropic", "sk-1", env_var="ANTHROPIC_API_KEY", kind="llm")
        store.put("c-off", "off", env_var="OFF", enabled=False)

        material = store.material()

        assert isinstance(material, SecretMaterial)
        assert list(material) == ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]
        assert material["ANTHROPIC_API_KEY"].reveal_text() == "sk-1"
        assert material["GITHUB_TOKEN"].reveal_text() == "ghp-1"

    def test_material_filters_by_names(self, store: SqlSecretStore) -> None:
        """Only the named secrets are delivered, and disabled ones among them are skipped."""
        store.put("one", "1", env_var="ONE")
        store.put("two", "2", env_var="TWO")
        store.put("three", "3", env_var="THREE", enabled=False)

        material = store.material(names=["two", "three"])

        assert list(material) == ["TWO"]

    def test_material_filters_by_kinds(self, store: SqlSecretStore) -> None:
        """Only secrets of the given kinds are delivered."""
        store.put("one", "1", env_var="ONE", kind="llm")
        store.put("two", "2", env_var="TWO", kind="git")
        store.put("three", "3", env_var="THREE")

        material = store.material(kinds=["git", "llm"])

        assert sorted(material) == ["ONE", "TWO"]

    def test_material_unknown_name_raises_not_found(self, store: SqlSecretStore) -> None:
        """A typo in names fails instead of silently delivering less."""
        store.put("one", "1", env_var="ONE")

        with pytest.raises(SecretNotFoundError, match="'onee'"):
            store.material(names=["one", "onee"])

    def test_material_rejects_single_string_filter(self, store: SqlSecretStore) -> None:
        """names="abc" would mean three one-letter names, so it is rejected."""
        with pytest.raises(InvalidSecretError, match="list of strings"):
            store.material(names="one")

    def test_material_of_empty_store(self, store: SqlSecretStore) -> None:
        """An empty store gives empty material."""
        assert len(store.material()) == 0


# Each case: the put() keyword arguments, and a fragment of the expected message.
REJECTED_PUTS: list[tuple[str, dict[str, Any], str]] = [
    ("empty-name", {"name": ""}, "invalid secret name"),
    ("name-with-space", {"name": "my token"}, "invalid secret name"),
    ("name-starting-with-dot", {"name": ".hidden"}, "invalid secret name"),
    ("name-too-long", {"name": "n" * 65}, "invalid secret name"),
    ("name-not-str", {"name": 7}, "invalid secret name"),
    ("env-var-with-dash", {"env_var": "MY-TOKEN"}, "invalid environment variable name"),
    ("env-var-leading-digit", {"env_var": "1TOKEN"}, "invalid environment variable name"),
    ("env-var-reserved", {"env_var": "PATH"}, "reserved"),
    ("env-var-reserved-lowercase", {"env_var": "node_options"}, "reserved"),
    ("env-var-reserved-prefix", {"env_var": "LD_PRELOAD"}, "reserved"),
    ("empty-value", {"value": ""}, "is empty"),
    ("empty-bytes", {"value": b""}, "is empty"),
    ("nul-byte", {"value": "before\x00after"}, "NUL byte"),
    ("too-long", {"value": "x" * (MAX_SECRET_BYTES + 1)}, "the maximum is 512000 bytes"),
    ("too-long-in-utf8", {"value": "é" * (MAX_SECRET_BYTES // 2 + 1)}, "the maximum is 512000 bytes"),
    ("value-wrong-type", {"value": 12345}, "has type int"),
    ("kind-with-space", {"kind": "an llm"}, "invalid secret kind"),
    ("enabled-not-bool", {"enabled": "yes"}, "must be True or False"),
]


class TestValidation:
    """Invalid arguments are rejected before anything is written."""

    @pytest.mark.parametrize(
        ("changes", "message"),
        [case[1:] for case in REJECTED_PUTS],
        ids=[case[0] for case in REJECTED_PUTS],
    )
    def test_rejected_put_leaves_no_row(
        self, store: SqlSecretStore, raw_engine: Engine, changes: dict[str, Any], message: str
    ) -> None:
        """The call raises InvalidSecretError and the table stays empty."""
        arguments: dict[str, Any] = {"name": "token", "value": "good value", "env_var": "TOKEN"}
        arguments.update(changes)

        with pytest.raises(InvalidSecretError, match=message):
            store.put(**arguments)

        assert raw_rows(raw_engine) == {}
        assert store.list() == []

    def test_rejected_update_keeps_old_value(self, store: SqlSecretStore) -> None:
        """A rejected put on an existing name changes nothing."""
        store.put("token", "original", env_var="TOKEN", kind="llm")

        with pytest.raises(InvalidSecretError):
            store.put("token", "x" * (MAX_SECRET_BYTES + 1), env_var="TOKEN")
        with pytest.raises(InvalidSecretError):
            store.put("token", "new", env_var="LD_LIBRARY_PATH")

        assert store.get("token").reveal_text() == "original"
        assert store.list()[0].env_var == "TOKEN"
        assert store.list()[0].kind == "llm"

    def test_duplicate_enabled_env_var_leaves_no_row(self, store: SqlSecretStore, raw_engine: Engine) -> None:
        """A second enabled secret for one variable is rejected; only the first row exists."""
        store.put("first", "1", env_var="TOKEN")

        with pytest.raises(InvalidSecretError, match="already used by enabled secret 'first'"):
            store.put("second", "2", env_var="TOKEN")

        assert set(raw_rows(raw_engine)) == {"first"}

    def test_disabled_secrets_may_share_env_var(self, store: SqlSecretStore) -> None:
        """Disabled secrets do not claim their variable, so an alternative can wait disabled."""
        store.put("first", "1", env_var="TOKEN")
        store.put("second", "2", env_var="TOKEN", enabled=False)
        store.put("third", "3", env_var="TOKEN", enabled=False)

        assert store.material()["TOKEN"].reveal_text() == "1"
        assert len(store.list()) == 3

    def test_renaming_env_var_of_same_secret_is_allowed(self, store: SqlSecretStore) -> None:
        """A secret does not conflict with itself when it is stored again."""
        store.put("first", "1", env_var="TOKEN")

        record = store.put("first", "2", env_var="TOKEN")

        assert record.env_var == "TOKEN"

    def test_messages_never_quote_the_value(self, store: SqlSecretStore) -> None:
        """Rejections describe the value without including it."""
        canary = new_canary()
        messages = []
        for value in (canary + "\x00", canary * 20_000):
            with pytest.raises(InvalidSecretError) as caught:
                store.put("token", value, env_var="TOKEN")
            messages.append(str(caught.value))

        leaked = [message for message in messages if canary in message]
        assert leaked == []

    def test_invalid_name_rejected_by_get_and_delete(self, store: SqlSecretStore) -> None:
        """Reads and deletes check names the same way writes do."""
        with pytest.raises(InvalidSecretError):
            store.get("bad name")
        with pytest.raises(InvalidSecretError):
            store.delete("bad name")


class TestLifecycle:
    """Opening, closing and describing a store."""

    def test_closed_store_raises(self, store_url: str, keyring: KeyRing) -> None:
        """Every call after close() raises SecretStoreError; close() twice is fine."""
        store = SqlSecretStore(store_url, keyring)
        store.close()
        store.close()

        with pytest.raises(SecretStoreError, match="is closed"):
            store.list()
        with pytest.raises(SecretStoreError, match="is closed"):
            store.put("token", "value", env_var="TOKEN")

    def test_context_manager_closes(self, store_url: str, keyring: KeyRing) -> None:
        """Leaving the with block closes the store."""
        with SqlSecretStore(store_url, keyring) as store:
            store.put("token", "value", env_var="TOKEN")

        with pytest.raises(SecretStoreError):
            store.get("token")

    def test_repr_hides_password_and_keys(self, store: SqlSecretStore, keyring: KeyRing) -> None:
        """The repr shows the URL without its password and the key versions without keys."""
        text = repr(store)

        assert "KeyRing(versions=[1], primary=1)" in text
        assert keyring.export().split(":")[1] not in text
        if store.engine.url.password:
            assert f":{store.engine.url.password}@" not in text
            assert ":***@" in text

    def test_unsupported_database_is_rejected(self, keyring: KeyRing) -> None:
        """Only SQLite and PostgreSQL URLs are accepted."""
        with pytest.raises(SecretStoreError, match="does not support 'mysql'"):
            SqlSecretStore("mysql://user:pw@127.0.0.1/db", keyring)

    def test_unopenable_sqlite_path_is_reported(self, tmp_path: Path, keyring: KeyRing) -> None:
        """A missing folder gives a SecretStoreError naming the database."""
        url = f"sqlite:///{tmp_path / 'missing-folder' / 'secrets.db'}"

        with pytest.raises(SecretStoreError, match="missing-folder"):
            SqlSecretStore(url, keyring)
