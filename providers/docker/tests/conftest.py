"""Fixtures for the Docker provider's tests, which all run against a real engine.

Every container these tests make is labelled ``dev.pi-sandbox.test=1`` and
belongs to a provider owner unique to this test session, so the session-end
sweep removes exactly this run's leftovers and nothing of another run that
shares the engine.
"""

from __future__ import annotations

import os
import secrets as random_tokens
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from pi_sandbox import SecretMaterial, SessionSpec
from pi_sandbox_docker import DockerProvider, DockerSandbox
from pi_sandbox_docker._engine import LABEL_OWNER

TEST_LABEL = "dev.pi-sandbox.test"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engine_restart: restarts the Docker engine; runs only with PI_SANDBOX_TEST_ENGINE_RESTART=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PI_SANDBOX_TEST_ENGINE_RESTART") == "1":
        return
    skip = pytest.mark.skip(reason="restarts the Docker engine; set PI_SANDBOX_TEST_ENGINE_RESTART=1 to run")
    for item in items:
        if "engine_restart" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def test_image(local_image: str) -> str:
    """The image with the real pi (the shared local_image fixture)."""
    return local_image


@pytest.fixture(scope="session")
def test_owner(engine: docker.DockerClient) -> Iterator[str]:
    """The provider owner of this session's sandboxes; at the end, its leftover containers go."""
    owner = f"test-{random_tokens.token_hex(4)}"
    yield owner
    filters = {"label": [f"{TEST_LABEL}=1", f"{LABEL_OWNER}={owner}"]}
    for container in engine.containers.list(all=True, filters=filters):
        container.remove(force=True)


@pytest.fixture(scope="session")
def secrets_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private secrets root for this session, in memory where possible."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("secrets")
    root = parent / f"pi-sandbox-test-{random_tokens.token_hex(4)}"
    root.mkdir(mode=0o700)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state folder (default workspaces and agent folders) of this session."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def provider_config(test_image: str, test_owner: str, secrets_root: Path, state_dir: Path) -> dict[str, Any]:
    """Keyword arguments for a `DockerProvider` of this test session."""
    return {
        "image": test_image,
        "owner": test_owner,
        "secrets_dir": str(secrets_root),
        "state_dir": str(state_dir),
        "pull_policy": "never",
        "extra_labels": {TEST_LABEL: "1"},
    }


@pytest.fixture
def provider_factory(provider_config: dict[str, Any]) -> Callable[[], DockerProvider]:
    """Make fresh providers of this test session."""
    return lambda: DockerProvider(**provider_config)


@pytest.fixture
def provider(provider_factory: Callable[[], DockerProvider]) -> Iterator[DockerProvider]:
    """A provider that is closed after the test."""
    instance = provider_factory()
    yield instance
    instance.close()


@pytest.fixture
def session_id() -> str:
    """A fresh session id."""
    return f"t-{random_tokens.token_hex(6)}"


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Return a function that runs Python code in a new process and returns the result."""

    def run(code: str, *, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    return run


@pytest.fixture
def create_sandbox(provider: DockerProvider) -> Iterator[Callable[..., DockerSandbox]]:
    """Return a function that creates a sandbox without network, terminated after the test.

    Keywords are `SessionSpec` fields, plus ``secrets``; the command defaults to
    ``sleep infinity`` run through the image's entrypoint.
    """
    created: list[DockerSandbox] = []

    def create(secrets: SecretMaterial | Mapping[str, str] | None = None, **fields: Any) -> DockerSandbox:
        values: dict[str, Any] = {
            "session_id": f"t-{random_tokens.token_hex(6)}",
            "network": "none",
            "command": ["sleep", "infinity"],
            **fields,
        }
        sandbox = provider.create(SessionSpec(**values), secrets)
        assert isinstance(sandbox, DockerSandbox)
        created.append(sandbox)
        return sandbox

    yield create
    for sandbox in created:
        sandbox.terminate(remove_data=True, timeout=1)


def assert_absent(value: str, text: str, where: str) -> None:
    """Fail, without printing either, when the secret ``value`` occurs in ``text``."""
    if value in text:
        pytest.fail(f"a secret value appears in {where}", pytrace=False)


@pytest.fixture
def absent() -> Callable[[str, str, str], None]:
    """Return `assert_absent`."""
    return assert_absent
