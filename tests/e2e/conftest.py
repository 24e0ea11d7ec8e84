"""Fixtures for the end-to-end tests: the real pi in a Docker sandbox, a real store, a mock model.

The sandboxes that talk to the mock model use the host's network, because the
mock listens on 127.0.0.1; the others use no network. Every container is
labelled ``dev.pi-sandbox.test=1`` plus a label unique to this test session,
by which the session-end sweep removes any that a failed test left behind.
Without a Docker engine the tests that need one are skipped with the reason,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import secrets as random_tokens
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from e2e_helpers import (
    KEY_ENV_VAR,
    RUN_LABEL,
    SECRET_NAME,
    TEST_LABEL,
    PiSession,
    hand_over,
)

from pi_sandbox import KeyRing, SecretMaterial, SessionSpec, SqlSecretStore, open_secret_store
from pi_sandbox.testing import contract_canary
from pi_sandbox.testing.mock_model import MockModelServer
from pi_sandbox_docker import DockerProvider, DockerSandbox


@pytest.fixture(scope="session")
def pi_image(local_image: str) -> str:
    """The image with the real pi (the shared local_image fixture)."""
    return local_image


@pytest.fixture(scope="session")
def run_labels(engine: docker.DockerClient) -> Iterator[dict[str, str]]:
    """The labels of this session's containers; at the end, any container still carrying them goes."""
    labels = {TEST_LABEL: "1", RUN_LABEL: f"e2e-{random_tokens.token_hex(4)}"}
    yield labels
    filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
    for container in engine.containers.list(all=True, filters=filters):
        container.remove(force=True)


@pytest.fixture(scope="session")
def provider_config(
    pi_image: str, run_labels: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Keyword arguments for this session's `DockerProvider`: private folders, test labels."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("secrets")
    secrets_root = parent / f"pi-sandbox-e2e-{random_tokens.token_hex(4)}"
    secrets_root.mkdir(mode=0o700)
    yield {
        "image": pi_image,
        "owner": run_labels[RUN_LABEL],
        "secrets_dir": str(secrets_root),
        "state_dir": str(tmp_path_factory.mktemp("state")),
        "pull_policy": "never",
        "extra_labels": run_labels,
    }
    shutil.rmtree(secrets_root, ignore_errors=True)


@pytest.fixture
def provider(provider_config: dict[str, Any]) -> Iterator[DockerProvider]:
    """A Docker provider of this test session, closed after the test."""
    instance = DockerProvider(**provider_config)
    yield instance
    instance.close()


@pytest.fixture
def api_key() -> str:
    """The key in the store, the only one the mock model accepts; it must never be printed."""
    return contract_canary("e2e-key")


@pytest.fixture
def encryption_key() -> str:
    """A fresh store key, as ``PI_SANDBOX_ENCRYPTION_KEY`` takes it."""
    return base64.b64encode(random_tokens.token_bytes(32)).decode()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """The URL of an SQLite file of this test."""
    return f"sqlite:///{tmp_path / 'secrets.db'}"


@pytest.fixture
def store(store_url: str, encryption_key: str, api_key: str) -> Iterator[SqlSecretStore]:
    """A real store in an SQLite file, holding ``api_key`` for ANTHROPIC_API_KEY."""
    opened = open_secret_store(store_url, keyring=KeyRing.from_string(encryption_key))
    opened.put(SECRET_NAME, api_key, env_var=KEY_ENV_VAR)
    yield opened
    opened.close()


@pytest.fixture
def model_server(api_key: str) -> Iterator[MockModelServer]:
    """The mock model on 127.0.0.1, accepting only ``api_key``."""
    with MockModelServer(api_key=api_key) as server:
        yield server


@pytest.fixture
def start_pi(
    provider: DockerProvider,
    store: SqlSecretStore,
    model_server: MockModelServer,
    tmp_path: Path,
) -> Iterator[Callable[..., PiSession]]:
    """Return a function that starts pi in a sandbox, pointed at the mock model.

    By default the sandbox gets the store's material and the host's network.
    Keywords: ``secrets`` replaces the material, ``network`` the network.
    Every sandbox is terminated, with its data, after the test.
    """
    started: list[PiSession] = []

    def start(secrets: SecretMaterial | Mapping[str, str] | None = None, network: str = "host") -> PiSession:
        folder = tmp_path / f"pi-{len(started)}"
        workspace, agent_dir = folder / "workspace", folder / "agent"
        workspace.mkdir(parents=True)
        agent_dir.mkdir()
        (agent_dir / "models.json").write_text(json.dumps(model_server.pi_models_config()))
        user = hand_over(workspace)
        hand_over(agent_dir)

        spec = SessionSpec(
            session_id=f"e2e-{random_tokens.token_hex(6)}",
            workspace=workspace,
            agent_dir=agent_dir,
            network=network,
            user=user,
            command=["pi", "--mode", "rpc", "--offline", "--model", f"anthropic/{model_server.model_id}"],
        )
        sandbox = provider.create(spec, store.material() if secrets is None else secrets)
        assert isinstance(sandbox, DockerSandbox)
        session = PiSession(sandbox, sandbox.attach(), workspace, agent_dir)
        started.append(session)
        return session

    yield start
    for session in started:
        session.channel.close()
        session.sandbox.terminate(remove_data=True, timeout=1)


@pytest.fixture
def pi(start_pi: Callable[..., PiSession]) -> PiSession:
    """pi in a sandbox with the stored key, on the host's network, pointed at the mock model."""
    return start_pi()
