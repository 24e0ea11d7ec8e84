"""How ``pi-sandbox`` reports errors: one ``error:`` line, one ``hint:`` line, a documented exit code."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import CliResult, assert_error

from pi_sandbox._cli._errors import ExitCode
from pi_sandbox._store import ENCRYPTION_KEY_ENV

Invoke = Callable[..., CliResult]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
MISSING_ENGINE = "base_url=unix:///nonexistent/pi-sandbox-test/docker.sock"


class TestUsageErrors:
    def test_unknown_option(self, invoke: Invoke) -> None:
        """An unknown option exits with 2 and names the option, without click's usage block."""
        result = invoke("ls", "--no-such-option")

        assert_error(result, 2, "--no-such-option")
        assert "pi-sandbox ls --help" in result.stderr

    def test_unknown_command(self, invoke: Invoke) -> None:
        """An unknown command exits with 2."""
        assert_error(invoke("no-such-command"), 2, "no-such-command")

    def test_malformed_provider_option(self, invoke: Invoke) -> None:
        """-o needs KEY=VALUE."""
        assert_error(invoke("-o", "novalue", "ls"), 2, "KEY=VALUE")

    def test_provider_rejects_unknown_option(self, invoke: Invoke) -> None:
        """An option the provider's factory does not take exits with 2 and names it."""
        result = invoke("-o", "no_such_setting=1", "ls")

        assert_error(result, 2, "no_such_setting")

    def test_run_rejects_conflicting_secret_options(self, invoke: Invoke, tmp_path: Path) -> None:
        """--no-secrets with --secret is a usage error, found before any sandbox exists."""
        result = invoke("run", "--workspace", str(tmp_path), "--no-secrets", "--secret", "x")

        assert_error(result, 2, "--no-secrets")

    def test_run_rejects_bad_session_id(self, invoke: Invoke, tmp_path: Path) -> None:
        """An invalid session id is a usage error."""
        result = invoke("run", "--workspace", str(tmp_path), "--session-id", "bad id!")

        assert_error(result, 2, "session_id")

    def test_run_needs_existing_workspace(self, invoke: Invoke, tmp_path: Path) -> None:
        """A workspace folder that does not exist is a usage error."""
        result = invoke("run", "--workspace", str(tmp_path / "missing"))

        assert_error(result, 2, "missing")


class TestNotFound:
    def test_unknown_provider(self, invoke: Invoke) -> None:
        """An unknown provider exits with 3 and lists the installed ones."""
        result = invoke("--provider", "no-such-provider", "ls")

        assert_error(result, 3, "no-such-provider", "docker")
        # Docker is installed here, so the hint does not tell the user to install it.
        assert "check the spelling" in result.stderr.splitlines()[1]
        assert "pip install" not in result.stderr

    def test_unknown_secret(self, invoke: Invoke) -> None:
        """An unknown secret exits with 3."""
        assert_error(invoke("secrets", "rm", "nope"), 3, "'nope'")


class TestUnavailable:
    def test_unreachable_engine(self, invoke: Invoke) -> None:
        """An unreachable engine exits with 4, and the hint points at doctor."""
        result = invoke("-o", MISSING_ENGINE, "ls")

        assert_error(result, 4, "not reachable")
        assert "doctor" in result.stderr.splitlines()[1]

    def test_doctor_reports_unreachable_engine(self, invoke: Invoke) -> None:
        """doctor marks the engine with a cross and a fix, the store with ticks, and exits with 1."""
        result = invoke("-o", MISSING_ENGINE, "doctor")

        assert result.exit_code == 1
        lines = result.stdout.splitlines()
        assert any(line.startswith("✓ secret store writable") for line in lines), result.stdout
        assert any(line.startswith("✗ engine reachable") for line in lines), result.stdout
        assert any(line.startswith("  fix: ") for line in lines), result.stdout
        assert any(line.startswith("- image starts: skipped") for line in lines), result.stdout

    def test_doctor_json(self, invoke: Invoke) -> None:
        """doctor --json reports each check and the overall result."""
        result = invoke("-o", MISSING_ENGINE, "doctor", "--json")

        report = json.loads(result.stdout)
        assert result.exit_code == 1
        assert report["ok"] is False
        checks = {check["name"]: check for check in report["checks"]}
        assert checks["encryption key"]["ok"] is True
        assert checks["secret store writable"]["ok"] is True
        assert checks["engine reachable"]["ok"] is False
        assert checks["engine reachable"]["hint"]


class TestStoreErrors:
    def test_missing_key(self, invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
        """A configured database without a key exits with 5."""
        monkeypatch.delenv(ENCRYPTION_KEY_ENV)

        result = invoke("secrets", "list")

        assert_error(result, 5, "no encryption key")

    def test_malformed_key_is_not_echoed(self, invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
        """A malformed key exits with 5, and the message does not quote the key."""
        monkeypatch.setenv(ENCRYPTION_KEY_ENV, "not-base64-key-material!!")

        result = invoke("secrets", "list")

        assert_error(result, 5, ENCRYPTION_KEY_ENV)
        assert "not-base64-key-material" not in result.stderr

    def test_doctor_reports_missing_key(self, invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
        """doctor fails the key check with a fix and skips the store."""
        monkeypatch.delenv(ENCRYPTION_KEY_ENV)

        result = invoke("-o", MISSING_ENGINE, "doctor", "--no-sandbox")

        assert result.exit_code == 1
        assert "✗ encryption key" in result.stdout
        assert "- secret store writable: skipped" in result.stdout


class TestTracebacks:
    def test_no_traceback_by_default(self, invoke: Invoke) -> None:
        """Errors never print a traceback without --debug."""
        result = invoke("secrets", "rm", "nope")

        assert "Traceback" not in result.stderr

    def test_debug_prints_traceback(self, invoke: Invoke) -> None:
        """--debug adds the traceback before the error line."""
        result = invoke("--debug", "secrets", "rm", "nope")

        assert result.exit_code == 3
        assert "Traceback" in result.stderr
        assert result.stderr.splitlines()[-2].startswith("error: ")


class TestExitCodeTable:
    def test_help_lists_every_exit_code(self, invoke: Invoke) -> None:
        """The top-level help lists each exit code."""
        result = invoke("--help")

        for code in ExitCode:
            assert re.search(rf"\b{code.value}\b", result.stdout), code

    def test_docs_list_every_exit_code(self) -> None:
        """docs/cli.md has a table row for each exit code."""
        text = DOCS.read_text(encoding="utf-8")

        for code in ExitCode:
            assert re.search(rf"^\| *`?{code.value}`? *\|", text, re.MULTILINE), code

    def test_docs_cover_every_command(self) -> None:
        """docs/cli.md has a heading for every command and subcommand."""
        from pi_sandbox._cli import cli

        text = DOCS.read_text(encoding="utf-8")
        headings = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        for name, command in cli.commands.items():
            subcommands = getattr(command, "commands", {})
            for subname in subcommands or [""]:
                full_name = f"pi-sandbox {name} {subname}".rstrip()
                assert f"`{full_name}" in headings, full_name


class TestLogging:
    def test_debug_level_goes_to_stderr(self, invoke: Invoke, canary: str) -> None:
        """-vv logs the store's debug records to stderr, with the logger name and no value."""
        result = invoke("-vv", "secrets", "set", "key", "--env", "KEY", input=canary)

        assert result.exit_code == 0, result.stderr
        assert "debug: stored secret 'key' for KEY" in result.stderr
        assert "[pi_sandbox.store]" in result.stderr
        assert result.stdout == ""

    def test_warnings_only_by_default(self, invoke: Invoke, canary: str) -> None:
        """Without -v, debug and info records stay hidden."""
        result = invoke("secrets", "set", "key", "--env", "KEY", input=canary)

        assert "debug:" not in result.stderr
        assert "info:" not in result.stderr

    def test_logging_setup_is_restored(self, invoke: Invoke) -> None:
        """An in-process invocation leaves the pi_sandbox logger as it found it."""
        package_logger = logging.getLogger("pi_sandbox")
        before = (package_logger.level, package_logger.propagate, list(package_logger.handlers))

        invoke("-vv", "secrets", "list")

        after = (package_logger.level, package_logger.propagate, list(package_logger.handlers))
        assert after == before
