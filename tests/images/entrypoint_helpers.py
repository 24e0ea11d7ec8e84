"""Helpers for driving images/codex-universal/entrypoint.sh and the local image in tests."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO_ROOT / "images" / "codex-universal" / "entrypoint.sh"
BUILD_SCRIPT = REPO_ROOT / "images" / "local" / "build.py"
TEST_LABEL = "dev.pi-sandbox.test=1"

EXIT_INVALID_SECRETS = 65
EXIT_SETUP_FAILED = 78

# The child writes its whole environment, as hex so that any byte survives,
# to the file named by its first argument.
_DUMP_ENV = (
    "import json, os, sys\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump({k.hex(): v.hex() for k, v in os.environb.items()}, f)\n"
)


def make_canary() -> str:
    """Return a unique marker value that must never show up in any output."""
    return f"canary-{secrets.token_hex(8)}"


def dump_env_command(out: Path) -> list[str]:
    """Return a command that writes its environment to ``out``."""
    return [sys.executable, "-c", _DUMP_ENV, str(out)]


def read_env_dump(out: Path) -> dict[bytes, bytes]:
    """Return the environment that a `dump_env_command` child saw."""
    raw = json.loads(out.read_text())
    return {bytes.fromhex(key): bytes.fromhex(value) for key, value in raw.items()}


def write_manifest(folder: Path, entries: Sequence[tuple[str, bytes]]) -> None:
    """Write one ``s-N`` file per entry and a manifest that lists them in order."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (name, value) in enumerate(entries):
        (folder / f"s-{index}").write_bytes(value)
        lines.append(f"{name}\ts-{index}\n")
    (folder / "manifest").write_text("".join(lines))


def run_entrypoint(
    command: Sequence[str],
    *,
    secrets_dir: Path,
    extra_env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run the entrypoint with bash, a small environment and ``PI_SECRETS_DIR``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PI_SECRETS_DIR": str(secrets_dir),
    }
    env.update(extra_env or {})
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *command],
        env=env,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=60,
        check=False,
    )


def output_contains(result: subprocess.CompletedProcess[bytes], text: str | bytes) -> bool:
    """Tell whether ``text`` is in the stdout or stderr of ``result``.

    Tests assert on this boolean, so that a failure never prints the output
    that holds a canary.
    """
    needle = text.encode() if isinstance(text, str) else text
    return needle in result.stdout or needle in result.stderr


def stderr_text(result: subprocess.CompletedProcess[bytes]) -> str:
    """Return the entrypoint's stderr as text, for messages that carry no canary."""
    return result.stderr.decode("utf-8", "replace")
