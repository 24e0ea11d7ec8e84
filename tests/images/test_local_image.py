"""The pi-sandbox-local image with the real pi, run in Docker without a network."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from entrypoint_helpers import (
    ENTRYPOINT,
    EXIT_INVALID_SECRETS,
    TEST_LABEL,
    make_canary,
    write_manifest,
)

pytestmark = pytest.mark.integration

PI_VERSION = json.loads((ENTRYPOINT.parents[1] / "local" / "package.json").read_text())["dependencies"][
    "@mariozechner/pi-coding-agent"
]


def _docker_run(
    image: str, *command: str, options: tuple[str, ...] = (), stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--label",
            TEST_LABEL,
            *options,
            image,
            *command,
        ],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=120,
        check=False,
    )


def _sandbox_readable(folder: Path) -> None:
    """Let uid 1000, the image's user, read the secrets folder and nobody else, where possible."""
    try:
        for path in [folder, *folder.iterdir()]:
            os.chown(path, 1000, 1000)
        folder.chmod(0o500)
        for path in folder.iterdir():
            path.chmod(0o400)
    except PermissionError:
        # Not root: fall back to world-readable test files.
        folder.chmod(0o755)
        for path in folder.iterdir():
            path.chmod(0o644)


class TestLocalImage:
    def test_pi_version(self, local_image: str) -> None:
        """pi --version prints the pinned version (pi 0.73 writes it to stderr)."""
        result = _docker_run(local_image, "pi", "--version")

        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert (result.stdout + result.stderr).decode().strip() == PI_VERSION

    def test_rpc_get_state_answers(self, local_image: str) -> None:
        """The default command, pi --mode rpc, answers get_state with one response line."""
        request = {"id": "state-1", "type": "get_state"}

        result = _docker_run(local_image, stdin=json.dumps(request).encode() + b"\n")

        assert result.returncode == 0, result.stderr.decode(errors="replace")
        first_line = result.stdout.split(b"\n", 1)[0]
        response = json.loads(first_line)
        assert response["type"] == "response"
        assert response["id"] == "state-1"
        assert response["command"] == "get_state"
        assert response["success"] is True
        assert isinstance(response["data"]["sessionId"], str)
        assert response["data"]["isStreaming"] is False
        assert response["data"]["messageCount"] == 0
        assert response["data"]["sessionFile"].startswith("/data/agent/")

    def test_user_and_folders(self, local_image: str) -> None:
        """The image runs as uid 1000, which owns /workspace and /data/agent."""
        result = _docker_run(
            local_image,
            "bash",
            "-c",
            'id -u; id -g; stat -c %u /workspace /data/agent; pwd; printf "%s\\n" "$PI_CODING_AGENT_DIR"',
        )

        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert result.stdout.decode().split() == ["1000", "1000", "1000", "1000", "/workspace", "/data/agent"]

    def test_tools_pi_uses_present(self, local_image: str) -> None:
        """rg, fdfind, git and bash are on PATH, so pi never tries to download them."""
        result = _docker_run(local_image, "bash", "-c", "command -v rg fdfind git bash node")

        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert len(result.stdout.split()) == 5

    def test_entrypoint_is_repository_file(self, local_image: str) -> None:
        """The image runs the very entrypoint.sh of images/codex-universal."""
        result = _docker_run(local_image, "cat", "/usr/local/bin/pi-sandbox-entrypoint")

        assert result.returncode == 0
        assert result.stdout == ENTRYPOINT.read_bytes()


class TestLocalImageSecrets:
    def test_secrets_in_process_not_in_inspect(self, local_image: str, tmp_path: Path) -> None:
        """Manifest secrets reach the process environment and never the container's configuration."""
        canary = make_canary()
        values = {"ANTHROPIC_API_KEY": canary + "-a", "MULTI_LINE": canary + "-b\nsecond line\n"}
        secrets_dir = tmp_path / "secrets"
        write_manifest(secrets_dir, [(name, value.encode()) for name, value in values.items()])
        _sandbox_readable(secrets_dir)
        name = f"pi-sandbox-test-{secrets.token_hex(4)}"

        create = subprocess.run(
            [
                "docker", "create", "--name", name, "--network", "none", "--label", TEST_LABEL,
                "--env", "PI_SESSION_ID=image-test",
                "--volume", f"{secrets_dir}:/run/secrets:ro",
                local_image, "env", "-0",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert create.returncode == 0, create.stderr
        try:
            started = subprocess.run(
                ["docker", "start", "--attach", name], capture_output=True, timeout=120, check=False
            )
            inspect = subprocess.run(
                ["docker", "inspect", name], capture_output=True, text=True, timeout=60, check=False
            )
        finally:
            subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=60, check=False)

        assert started.returncode == 0
        environment = dict(entry.split(b"=", 1) for entry in started.stdout.split(b"\0") if b"=" in entry)
        for env_name, value in values.items():
            assert environment.get(env_name.encode()) == value.encode(), env_name
        assert environment[b"PI_SESSION_ID"] == b"image-test"
        assert inspect.returncode == 0
        leaked = canary in inspect.stdout
        assert not leaked, "a secret value appeared in docker inspect"
        assert canary.encode() not in started.stderr

    def test_invalid_manifest_stops_container(self, local_image: str, tmp_path: Path) -> None:
        """A malformed manifest stops the container with exit 65, naming the line."""
        canary = make_canary()
        secrets_dir = tmp_path / "secrets"
        write_manifest(secrets_dir, [("GOOD", canary.encode())])
        (secrets_dir / "manifest").write_text("GOOD\ts-0\nLD_PRELOAD\ts-0\n")
        _sandbox_readable(secrets_dir)

        result = _docker_run(
            local_image, "echo", "command-ran", options=("--volume", f"{secrets_dir}:/run/secrets:ro")
        )

        assert result.returncode == EXIT_INVALID_SECRETS
        assert b"command-ran" not in result.stdout
        assert b"line 2" in result.stderr
        assert canary.encode() not in result.stdout + result.stderr
