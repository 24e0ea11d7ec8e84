"""``ls``, ``exec``, ``stop``, ``rm``, ``cleanup``, ``providers`` and ``doctor`` on a real Docker engine."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cli_helpers import CliResult, assert_error

from pi_sandbox import Sandbox, SandboxStatus, SessionSpec, get_provider

Invoke = Callable[..., CliResult]

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox(provider_config: dict[str, Any], session_id: str) -> Iterator[Sandbox]:
    """A running sandbox without network, made through the library; terminated after the test."""
    with get_provider("docker", **provider_config) as provider:
        created = provider.create(
            SessionSpec(session_id=session_id, command=["sleep", "infinity"], network="none")
        )
        yield created
        created.terminate(remove_data=True, timeout=1)


class TestList:
    def test_json_lists_the_sandbox(
        self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox
    ) -> None:
        """ls --json shows the sandbox with its status and id."""
        result = invoke(*provider_options, "ls", "--json")

        assert result.exit_code == 0, result.stderr
        rows = {row["session_id"]: row for row in json.loads(result.stdout)}
        row = rows[sandbox.session_id]
        assert row["status"] == "running"
        assert row["provider"] == "docker"
        assert row["provider_id"] == sandbox.provider_id

    def test_table_lists_the_sandbox(
        self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox
    ) -> None:
        """ls prints one table row per sandbox."""
        result = invoke(*provider_options, "ls")

        assert result.exit_code == 0, result.stderr
        rows = [line for line in result.stdout.splitlines() if sandbox.session_id in line]
        assert len(rows) == 1
        assert "running" in rows[0]
        assert sandbox.provider_id[:12] in rows[0]


class TestExec:
    def test_passes_output_and_exit_code(
        self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox
    ) -> None:
        """exec prints the command's stdout and stderr and exits with its code."""
        result = invoke(
            *provider_options, "exec", sandbox.session_id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"
        )

        assert result.exit_code == 7
        assert result.stdout == "out\n"
        assert result.stderr == "err\n"

    def test_options_before_session(
        self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox
    ) -> None:
        """--workdir and --env apply; words after SESSION belong to the command."""
        result = invoke(
            *provider_options,
            "exec",
            "-w",
            "/tmp",
            "-e",
            "GREETING=hi",
            sandbox.session_id,
            "sh",
            "-c",
            'echo "$GREETING $(pwd)"',
        )

        assert result.exit_code == 0, result.stderr
        assert result.stdout == "hi /tmp\n"

    def test_interactive_sends_stdin(
        self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox
    ) -> None:
        """-i sends standard input to the command."""
        result = invoke(*provider_options, "exec", "-i", sandbox.session_id, "--", "cat", input="piped text")

        assert result.exit_code == 0, result.stderr
        assert result.stdout == "piped text"

    def test_timeout_exits_124(self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox) -> None:
        """A command past --timeout is killed, and exec exits with 124."""
        result = invoke(*provider_options, "exec", "--timeout", "1", sandbox.session_id, "--", "sleep", "30")

        assert_error(result, 124, "1 seconds")

    def test_unknown_session(self, invoke: Invoke, provider_options: list[str]) -> None:
        """An unknown session exits with 3, one error line and a hint."""
        result = invoke(*provider_options, "exec", "no-such-session", "--", "true")

        assert_error(result, 3, "no-such-session")
        assert "pi-sandbox ls" in result.stderr.splitlines()[1]


class TestStopRemoveCleanup:
    def test_stop_then_rm(self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox) -> None:
        """stop leaves a stopped sandbox; rm removes it."""
        result = invoke(*provider_options, "stop", "--timeout", "1", sandbox.session_id)

        assert result.exit_code == 0, result.stderr
        assert sandbox.refresh() is SandboxStatus.STOPPED

        result = invoke(*provider_options, "rm", sandbox.session_id)

        assert result.exit_code == 0, result.stderr
        assert sandbox.refresh() is SandboxStatus.REMOVED

    @pytest.mark.parametrize("command", ["stop", "rm"])
    def test_unknown_session(self, invoke: Invoke, provider_options: list[str], command: str) -> None:
        """stop and rm of an unknown session exit with 3."""
        assert_error(invoke(*provider_options, command, "no-such-session"), 3, "no-such-session")

    def test_invalid_session_id(self, invoke: Invoke, provider_options: list[str]) -> None:
        """A session id with forbidden characters is a usage error."""
        assert_error(invoke(*provider_options, "rm", "bad/id"), 2, "session_id")

    def test_cleanup_removes_stopped_sandbox(
        self, invoke: Invoke, provider_options: list[str], sandbox: Sandbox
    ) -> None:
        """cleanup removes an ended sandbox and reports the counts."""
        sandbox.stop(timeout=1)

        result = invoke(*provider_options, "cleanup", "--json")

        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["sandboxes_removed"] >= 1
        assert "secret_dirs_removed" in report
        assert sandbox.refresh() is SandboxStatus.REMOVED

    def test_cleanup_sentence(self, invoke: Invoke, provider_options: list[str]) -> None:
        """Without --json, cleanup prints one sentence with both counts."""
        result = invoke(*provider_options, "cleanup")

        assert result.exit_code == 0, result.stderr
        assert "ended sandboxes" in result.stdout
        assert "abandoned secrets folders" in result.stdout


class TestProvidersAndDoctor:
    def test_providers_json(self, invoke: Invoke, provider_options: list[str]) -> None:
        """providers --json names docker, its distribution and a usable check."""
        result = invoke(*provider_options, "providers", "--json")

        assert result.exit_code == 0, result.stderr
        rows = {row["name"]: row for row in json.loads(result.stdout)}
        assert rows["docker"]["distribution"] == "pi-sandbox-docker"
        assert rows["docker"]["usable"] is True
        assert rows["docker"]["selected"] is True

    def test_doctor_passes(self, invoke: Invoke, provider_options: list[str], canary: str) -> None:
        """doctor ticks every check on a working host, probe sandbox included, and exits with 0."""
        invoke("secrets", "set", "anthropic", "--env", "ANTHROPIC_API_KEY", input=canary)

        result = invoke(*provider_options, "doctor")

        assert result.exit_code == 0, result.stdout
        lines = result.stdout.splitlines()
        names = [
            "encryption key",
            "secret store writable",
            "stored secrets decrypt",
            "provider",
            "engine reachable",
            "image starts",
            "secrets visible in the sandbox",
        ]
        assert [line.split(":")[0] for line in lines] == [f"✓ {name}" for name in names]

    def test_doctor_leaves_nothing(
        self,
        invoke: Invoke,
        provider_options: list[str],
        engine: Any,
        provider_config: dict[str, Any],
        open_store: Callable[[], Any],
    ) -> None:
        """doctor removes its probe secret and its probe sandbox."""
        result = invoke(*provider_options, "doctor", "--json")

        assert result.exit_code == 0, result.stdout
        assert open_store().list() == []
        filters = {"label": [f"dev.pi-sandbox.owner={provider_config['owner']}"]}
        leftovers = [c.name for c in engine.containers.list(all=True, filters=filters) if "doctor" in c.name]
        assert leftovers == []

    def test_doctor_missing_image(self, invoke: Invoke, provider_options: list[str]) -> None:
        """A missing image fails the image check with a fix, and doctor exits with 1."""
        result = invoke(*provider_options, "doctor", "--image", "pi-sandbox-test-missing:none")

        assert result.exit_code == 1
        assert "✗ image starts" in result.stdout
        assert "fix: " in result.stdout
