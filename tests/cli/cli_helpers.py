"""Helpers shared by the command-line tests."""

from __future__ import annotations

import hmac
import shutil
import sys
import sysconfig
from pathlib import Path

import attrs
import pytest

TEST_LABEL = "dev.pi-sandbox.test"


@attrs.frozen
class CliResult:
    """What one ``pi-sandbox`` invocation produced."""

    exit_code: int
    stdout: str
    stderr: str


def assert_absent(value: str, text: str, where: str) -> None:
    """Fail, without printing either, when the secret ``value`` occurs in ``text``."""
    if value in text:
        pytest.fail(f"a secret value appears in {where}", pytrace=False)


def assert_same_secret(actual: bytes, expected: bytes, context: str) -> None:
    """Fail, without printing either value, unless the two are equal."""
    if not hmac.compare_digest(actual, expected):
        pytest.fail(
            f"{context}: the stored value ({len(actual)} bytes) differs from the expected one "
            f"({len(expected)} bytes)",
            pytrace=False,
        )


def assert_error(result: CliResult, exit_code: int, *words: str) -> None:
    """Check that ``result`` failed with ``exit_code``, one ``error:`` line and one ``hint:`` line."""
    lines = result.stderr.splitlines()
    assert result.exit_code == exit_code, result.stderr
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert lines[1].startswith("hint: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], result.stderr


def cli_command() -> list[str]:
    """Return the argv that starts the installed ``pi-sandbox`` console script."""
    script = Path(sysconfig.get_path("scripts")) / "pi-sandbox"
    if script.exists():
        return [str(script)]
    found = shutil.which("pi-sandbox")
    if found:
        return [found]
    return [sys.executable, "-c", "from pi_sandbox._cli import main; main()"]
