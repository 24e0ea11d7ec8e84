"""``pi-sandbox secrets``: against a real SQLite store, through click's runner and a real terminal."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import CliResult, assert_absent, assert_error, assert_same_secret, cli_command

from pi_sandbox import DecryptionError, KeyRing
from pi_sandbox._secrets import MAX_SECRET_BYTES
from pi_sandbox._store import ENCRYPTION_KEY_ENV, ENCRYPTION_KEY_FILE_ENV, SqlSecretStore

Invoke = Callable[..., CliResult]
OpenStore = Callable[[], SqlSecretStore]


class TestSecretsSet:
    def test_reads_value_from_stdin(self, invoke: Invoke, open_store: OpenStore, canary: str) -> None:
        """The value piped in is stored, and no output shows it."""
        result = invoke(
            "secrets", "set", "anthropic", "--env", "ANTHROPIC_API_KEY", "--kind", "llm", input=canary
        )

        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""
        assert "stored secret 'anthropic' for ANTHROPIC_API_KEY" in result.stderr
        store = open_store()
        assert_same_secret(store.get("anthropic").reveal(), canary.encode(), "secrets set")
        (record,) = store.list()
        assert record.env_var == "ANTHROPIC_API_KEY"
        assert record.kind == "llm"
        assert record.enabled

    @pytest.mark.parametrize(
        ("suffix", "stored_suffix"),
        [("\n", ""), ("\r\n", ""), ("\n\n", "\n"), ("", "")],
        ids=["newline", "crlf", "two-newlines", "none"],
    )
    def test_strips_one_line_ending(
        self, invoke: Invoke, open_store: OpenStore, canary: str, suffix: str, stored_suffix: str
    ) -> None:
        """Exactly one trailing line ending, the one echo adds, is removed."""
        result = invoke("secrets", "set", "key", "--env", "KEY", input=canary + suffix)

        assert result.exit_code == 0, result.stderr
        stored = open_store().get("key").reveal()
        assert_same_secret(stored, (canary + stored_suffix).encode(), "secrets set")

    def test_keep_newline_stores_bytes_exactly(
        self, invoke: Invoke, open_store: OpenStore, canary: str
    ) -> None:
        """--keep-newline stores what standard input held, byte for byte."""
        value = b"\xff\x01" + canary.encode() + b"\r\n"

        result = invoke("secrets", "set", "key", "--env", "KEY", "--keep-newline", input=value)

        assert result.exit_code == 0, result.stderr
        assert_same_secret(open_store().get("key").reveal(), value, "secrets set --keep-newline")

    def test_disabled_flag(self, invoke: Invoke, open_store: OpenStore, canary: str) -> None:
        """--disabled stores the secret without delivering it."""
        result = invoke("secrets", "set", "key", "--env", "KEY", "--disabled", input=canary)

        assert result.exit_code == 0, result.stderr
        assert not open_store().list()[0].enabled
        assert len(open_store().material()) == 0

    def test_replaces_existing_secret(self, invoke: Invoke, open_store: OpenStore, canary: str) -> None:
        """Setting a name again replaces the value and the settings."""
        invoke("secrets", "set", "key", "--env", "OLD_NAME", input="first-value")

        result = invoke("secrets", "set", "key", "--env", "NEW_NAME", input=canary)

        assert result.exit_code == 0, result.stderr
        (record,) = open_store().list()
        assert record.env_var == "NEW_NAME"
        assert_same_secret(open_store().get("key").reveal(), canary.encode(), "secrets set twice")

    def test_empty_stdin_is_usage_error(self, invoke: Invoke, open_store: OpenStore) -> None:
        """A lone newline leaves nothing to store."""
        result = invoke("secrets", "set", "key", "--env", "KEY", input="\n")

        assert_error(result, 2, "standard input is empty")
        assert open_store().list() == []

    def test_too_long_value_is_usage_error(self, invoke: Invoke, open_store: OpenStore) -> None:
        """A value past the store's maximum is rejected before anything is written."""
        result = invoke("secrets", "set", "key", "--env", "KEY", input=b"x" * (MAX_SECRET_BYTES + 10))

        assert_error(result, 2, "longer than the maximum")
        assert open_store().list() == []

    def test_value_option_does_not_exist(self, invoke: Invoke, canary: str) -> None:
        """There is no way to pass the value in argv; trying is a usage error."""
        result = invoke("secrets", "set", "key", "--env", "KEY", "--value", "not-the-canary")

        assert_error(result, 2, "--value")

    def test_help_offers_no_value_option(self, invoke: Invoke) -> None:
        """The help text explains stdin and offers no option that takes the value."""
        result = invoke("secrets", "set", "--help")

        assert result.exit_code == 0
        assert "--value" not in result.stdout
        assert "standard input" in result.stdout
        assert "--keep-newline" in result.stdout

    @pytest.mark.parametrize("env_var", ["1BAD", "PATH", "LD_PRELOAD", "WITH-DASH"])
    def test_bad_env_var_is_usage_error(
        self, invoke: Invoke, open_store: OpenStore, canary: str, env_var: str
    ) -> None:
        """An invalid or reserved variable name is rejected with exit code 2 and a hint."""
        result = invoke("secrets", "set", "key", "--env", env_var, input=canary)

        assert_error(result, 2, env_var)
        assert open_store().list() == []

    def test_bad_name_is_usage_error(self, invoke: Invoke, canary: str) -> None:
        """A secret name outside the allowed characters is rejected."""
        result = invoke("secrets", "set", "no spaces", "--env", "KEY", input=canary)

        assert_error(result, 2, "invalid secret name")

    def test_terminal_prompts_twice_hidden(
        self, tmp_path: Path, store_environment: dict[str, str], canary: str
    ) -> None:
        """In a terminal, the value is asked for twice without echo, and never printed."""
        pid, fd = pty.fork()
        if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
            argv = [*cli_command(), "secrets", "set", "typed", "--env", "TYPED"]
            os.execve(argv[0], argv, {**os.environ, **store_environment})  # noqa: S606 - no shell wanted

        transcript = bytearray()

        def read_until(marker: bytes) -> None:
            deadline = time.monotonic() + 60
            while marker not in transcript:
                assert time.monotonic() < deadline, f"no {marker!r} in the terminal output"
                ready, _, _ = select.select([fd], [], [], 1)
                if ready:
                    transcript.extend(os.read(fd, 4096))

        read_until(b"Value:")
        os.write(fd, canary.encode() + b"\n")
        read_until(b"Repeat for confirmation:")
        os.write(fd, canary.encode() + b"\n")
        read_until(b"stored secret")
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):  # the terminal may have closed with the child
            transcript.extend(os.read(fd, 4096))
        os.close(fd)

        assert os.waitstatus_to_exitcode(status) == 0
        assert_absent(canary, transcript.decode("utf-8", "replace"), "the terminal")
        from pi_sandbox import open_secret_store

        with open_secret_store() as store:
            assert_same_secret(store.get("typed").reveal(), canary.encode(), "the prompted value")


class TestSecretsList:
    def test_table_shows_metadata_not_values(self, invoke: Invoke, canary: str) -> None:
        """The table lists name, variable, kind, state and key version; never the value."""
        invoke("secrets", "set", "anthropic", "--env", "ANTHROPIC_API_KEY", "--kind", "llm", input=canary)
        invoke("secrets", "set", "other", "--env", "OTHER_KEY", "--disabled", input=canary + "2")

        result = invoke("secrets", "list")

        assert result.exit_code == 0, result.stderr
        for word in (
            "anthropic",
            "ANTHROPIC_API_KEY",
            "llm",
            "other",
            "OTHER_KEY",
            "yes",
            "no",
            "key version",
        ):
            assert word in result.stdout
        rows = [line for line in result.stdout.splitlines() if "anthropic" in line]
        assert len(rows) == 1

    def test_json_lists_every_field(self, invoke: Invoke, canary: str) -> None:
        """--json prints the records as a list of objects, without a value field."""
        invoke("secrets", "set", "anthropic", "--env", "ANTHROPIC_API_KEY", input=canary)

        result = invoke("secrets", "list", "--json")

        assert result.exit_code == 0, result.stderr
        (record,) = json.loads(result.stdout)
        assert record["name"] == "anthropic"
        assert record["env_var"] == "ANTHROPIC_API_KEY"
        assert record["enabled"] is True
        assert record["key_version"] == 1
        assert set(record) == {
            "name",
            "env_var",
            "kind",
            "enabled",
            "key_version",
            "created_at",
            "updated_at",
        }

    def test_empty_store(self, invoke: Invoke) -> None:
        """An empty store prints an empty JSON list, and a note instead of a table."""
        assert json.loads(invoke("secrets", "list", "--json").stdout) == []
        result = invoke("secrets", "list")
        assert result.exit_code == 0
        assert result.stdout == ""
        assert "no secrets stored" in result.stderr


class TestSecretsRemoveEnableDisable:
    def test_rm_deletes(self, invoke: Invoke, open_store: OpenStore, canary: str) -> None:
        """rm deletes the secret."""
        invoke("secrets", "set", "key", "--env", "KEY", input=canary)

        result = invoke("secrets", "rm", "key")

        assert result.exit_code == 0, result.stderr
        assert open_store().list() == []

    @pytest.mark.parametrize("command", ["rm", "enable", "disable"])
    def test_unknown_secret_is_not_found(self, invoke: Invoke, command: str) -> None:
        """An unknown name exits with 3, one error line and one hint line."""
        result = invoke("secrets", command, "missing")

        assert_error(result, 3, "secret 'missing' not found")
        assert "secrets list" in result.stderr.splitlines()[1]

    def test_disable_then_enable(self, invoke: Invoke, open_store: OpenStore, canary: str) -> None:
        """disable stops delivery, enable restores it."""
        invoke("secrets", "set", "key", "--env", "KEY", input=canary)

        assert invoke("secrets", "disable", "key").exit_code == 0
        assert list(open_store().material()) == []
        assert invoke("secrets", "enable", "key").exit_code == 0
        assert list(open_store().material()) == ["KEY"]

    def test_enable_conflicting_env_var_is_usage_error(self, invoke: Invoke, canary: str) -> None:
        """Enabling a second secret for the same variable is rejected with a hint."""
        invoke("secrets", "set", "first", "--env", "KEY", input=canary)
        invoke("secrets", "set", "second", "--env", "KEY", "--disabled", input=canary + "2")

        result = invoke("secrets", "enable", "second")

        assert_error(result, 2, "KEY")


class TestRotateKey:
    def test_key_file_is_rewritten(
        self, invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, canary: str
    ) -> None:
        """With a key file, the new key ring replaces it and still decrypts every secret."""
        key_file = KeyRing.generate().write_file(tmp_path / "keys")
        monkeypatch.delenv(ENCRYPTION_KEY_ENV)
        monkeypatch.setenv(ENCRYPTION_KEY_FILE_ENV, str(key_file))
        invoke("secrets", "set", "key", "--env", "KEY", input=canary)

        result = invoke("secrets", "rotate-key")

        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""
        ring = KeyRing.from_file(key_file)
        assert ring.versions == (2, 1)
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        from pi_sandbox import open_secret_store

        with open_secret_store() as store:
            assert store.list()[0].key_version == 2
            assert_same_secret(store.get("key").reveal(), canary.encode(), "after rotate-key")

    def test_drop_old_leaves_only_new_key(
        self, invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, canary: str
    ) -> None:
        """--drop-old removes the old keys from the file once every secret uses the new one."""
        key_file = KeyRing.generate().write_file(tmp_path / "keys")
        monkeypatch.delenv(ENCRYPTION_KEY_ENV)
        monkeypatch.setenv(ENCRYPTION_KEY_FILE_ENV, str(key_file))
        invoke("secrets", "set", "key", "--env", "KEY", input=canary)

        result = invoke("secrets", "rotate-key", "--drop-old")

        assert result.exit_code == 0, result.stderr
        assert KeyRing.from_file(key_file).versions == (2,)
        assert invoke("secrets", "list", "--json").exit_code == 0
        from pi_sandbox import open_secret_store

        with open_secret_store() as store:
            assert_same_secret(store.get("key").reveal(), canary.encode(), "after rotate-key --drop-old")

    def test_environment_key_is_printed(
        self, invoke: Invoke, monkeypatch: pytest.MonkeyPatch, canary: str
    ) -> None:
        """With $PI_SANDBOX_ENCRYPTION_KEY, the new value is printed; the old one stops working."""
        invoke("secrets", "set", "key", "--env", "KEY", input=canary)

        result = invoke("secrets", "rotate-key")

        assert result.exit_code == 0, result.stderr
        assert ENCRYPTION_KEY_ENV in result.stderr
        new_value = result.stdout.strip()
        assert KeyRing.from_string(new_value).versions == (2, 1)
        from pi_sandbox import open_secret_store

        with open_secret_store() as store, pytest.raises(DecryptionError):
            store.get("key")
        monkeypatch.setenv(ENCRYPTION_KEY_ENV, new_value)
        with open_secret_store() as store:
            assert_same_secret(store.get("key").reveal(), canary.encode(), "with the printed key")

    def test_embedded_store_key_file(
        self, invoke: Invoke, monkeypatch: pytest.MonkeyPatch, canary: str
    ) -> None:
        """Without any configuration, the embedded store's own key file is rotated."""
        from pi_sandbox._store import DATABASE_URL_ENV, default_key_file

        monkeypatch.delenv(ENCRYPTION_KEY_ENV)
        monkeypatch.delenv(DATABASE_URL_ENV)
        invoke("secrets", "set", "key", "--env", "KEY", input=canary)
        assert KeyRing.from_file(default_key_file()).versions == (1,)

        result = invoke("secrets", "rotate-key", "--drop-old")

        assert result.exit_code == 0, result.stderr
        assert KeyRing.from_file(default_key_file()).versions == (2,)
        assert str(default_key_file()) in result.stderr

    def test_no_key_configured_is_store_error(self, invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
        """A configured database without a key exits with 5."""
        monkeypatch.delenv(ENCRYPTION_KEY_ENV)

        result = invoke("secrets", "rotate-key")

        assert_error(result, 5, "no encryption key")
