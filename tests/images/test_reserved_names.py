"""The entrypoint rejects exactly the environment names that the Python package reserves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from entrypoint_helpers import (
    ENTRYPOINT,
    EXIT_INVALID_SECRETS,
    dump_env_command,
    make_canary,
    output_contains,
    run_entrypoint,
    write_manifest,
)

from pi_sandbox._secrets import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES


def _bash_array(name: str) -> list[str]:
    """Return the words of ``readonly NAME=( ... )`` in the entrypoint."""
    text = ENTRYPOINT.read_text()
    match = re.search(rf"^readonly {name}=\(\n(.*?)^\)$", text, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"readonly {name}=( ... ) not found in {ENTRYPOINT}"
    return match.group(1).split()


class TestReservedLists:
    def test_names_match_python(self) -> None:
        """RESERVED_ENV_NAMES in the script equals the Python frozenset."""
        names = _bash_array("RESERVED_ENV_NAMES")

        assert len(names) == len(set(names)), "duplicate entry in the script"
        assert set(names) == set(RESERVED_ENV_NAMES)

    def test_prefixes_match_python(self) -> None:
        """RESERVED_ENV_PREFIXES in the script equals the Python tuple."""
        prefixes = _bash_array("RESERVED_ENV_PREFIXES")

        assert len(prefixes) == len(set(prefixes)), "duplicate entry in the script"
        assert set(prefixes) == set(RESERVED_ENV_PREFIXES)


def _reserved_examples() -> list[str]:
    examples = []
    for name in sorted(RESERVED_ENV_NAMES):
        examples.extend([name, name.lower()])
    for prefix in RESERVED_ENV_PREFIXES:
        examples.extend([f"{prefix}X", f"{prefix.lower()}x"])
    return examples


@pytest.mark.parametrize("name", _reserved_examples())
def test_reserved_name_rejected(tmp_path: Path, name: str) -> None:
    """Every reserved name and prefix, in either case, stops the entrypoint with exit 65."""
    canary = make_canary()
    secrets_dir = tmp_path / "secrets"
    write_manifest(secrets_dir, [(name, canary.encode())])
    out = tmp_path / "env.json"

    result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

    assert result.returncode == EXIT_INVALID_SECRETS
    assert not out.exists()
    assert b"reserved" in result.stderr
    assert not output_contains(result, canary)
