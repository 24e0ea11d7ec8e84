"""Fixtures for the command-line tests: a real SQLite store per test, and a real Docker engine.

Every test gets its own store file and key through ``PI_SANDBOX_DATABASE_URL``
and ``PI_SANDBOX_ENCRYPTION_KEY``, and user folders under tmp_path. Tests that
need Docker are skipped with the reason when the engine cannot be reached,
except under ``CI=true``, where they fail. Their sandboxes belong to a
provider owner unique to the test session and carry ``dev.pi-sandbox.test=1``;
whatever is left of them at the end is removed.
"""

from __future__ import annotations

import base64
import os
import secrets as random_tokens
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import TEST_LABEL, CliResult, assert_absent
from click.testing import CliRunner

from pi_sandbox._cli import cli
from pi_sandbox._store import (
    DATABASE_URL_ENV,
    ENCRYPTION_KEY_ENV,
    ENCRYPTION_KEY_FILE_ENV,
    SqlSecretStore,
    open_secret_store,
)


@pytest.fixture(autouse=True)
def store_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the store at a new SQLite file and key, and the user folders into tmp_path."""
    for name in (DATABASE_URL_ENV, ENCRYPTION_KEY_ENV, ENCRYPTION_KEY_FILE_ENV, "SANDBOX_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    values = {
        DATABASE_URL_ENV: f"sqlite:///{tmp_path / 'secrets.db'}",
        ENCRYPTION_KEY_ENV: base64.b64encode(random_tokens.token_bytes(32)).decode(),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def open_store() -> Iterator[Callable[[], SqlSecretStore]]:
    """Return a function that opens the test's store as the command line does."""
    opened: list[SqlSecretStore] = []

    def open_it() -> SqlSecretStore:
        store = open_secret_store()
        opened.append(store)
        return store

    yield open_it
    for store in opened:
        store.close()


@pytest.fixture
def canary() -> str:
    """A fresh secret value that must never appear in any output."""
    return f"canary-{random_tokens.token_hex(12)}"


@pytest.fixture
def invoke(canary: str) -> Callable[..., CliResult]:
    """Return a function that runs ``pi-sandbox ARGS`` in this process and checks for the canary."""

    def run(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> CliResult:
        runner = CliRunner()
        result = runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
        outcome = CliResult(result.exit_code, result.stdout, result.stderr)
        assert_absent(canary, outcome.stdout + outcome.stderr, f"the output of pi-sandbox {' '.join(args)}")
        return outcome

    return run


@pytest.fixture(scope="session")
def test_image(local_image: str) -> str:
    """The image with the real pi (the shared local_image fixture)."""
    return local_image


@pytest.fixture(scope="session")
def test_owner(engine: Any) -> Iterator[str]:
    """The provider owner of this session's sandboxes; its leftover containers go at the end."""
    owner = f"test-cli-{random_tokens.token_hex(4)}"
    yield owner
    filters = {"label": [f"{TEST_LABEL}=1", f"dev.pi-sandbox.owner={owner}"]}
    for container in engine.containers.list(all=True, filters=filters):
        container.remove(force=True)


@pytest.fixture(scope="session")
def provider_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private secrets root (in memory where possible) and state folder for the session."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("secrets")
    secrets_root = parent / f"pi-sandbox-cli-test-{random_tokens.token_hex(4)}"
    secrets_root.mkdir(mode=0o700)
    yield {"secrets_dir": str(secrets_root), "state_dir": str(tmp_path_factory.mktemp("state"))}
    shutil.rmtree(secrets_root, ignore_errors=True)


@pytest.fixture(scope="session")
def provider_config(test_image: str, test_owner: str, provider_folders: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments of the Docker provider that these tests use."""
    return {
        "image": test_image,
        "owner": test_owner,
        "pull_policy": "never",
        "extra_labels": {TEST_LABEL: "1"},
        **provider_folders,
    }


@pytest.fixture(scope="session")
def provider_options(provider_config: dict[str, Any]) -> list[str]:
    """The same configuration as ``-o KEY=VALUE`` options of the command line."""
    import json

    options = []
    for key, value in provider_config.items():
        options += ["-o", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return options


@pytest.fixture
def session_id() -> str:
    """A fresh session id."""
    return f"t-cli-{random_tokens.token_hex(6)}"
