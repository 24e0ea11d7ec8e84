"""The demo and the host application example, each run as its own process against the real engine."""

from __future__ import annotations

import json
import os
import secrets as random_tokens
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import KEY_ENV_VAR, REPO_ROOT, RUN_LABEL, TEST_LABEL, assert_absent

from pi_sandbox import KeyRing, open_secret_store
from pi_sandbox.testing.mock_model import DEFAULT_REPLY, MockModelServer

pytestmark = pytest.mark.integration

DEMO = REPO_ROOT / "examples" / "demo.py"
README = REPO_ROOT / "README.md"
WRAPPER = Path(__file__).with_name("run_with_test_provider.py")
EXAMPLE_TIMEOUT = 600


def readme_host_app(destination: Path) -> Path:
    """Write the Python block of the README's host-application section to ``destination``."""
    text = README.read_text()
    section = text[text.index("## A host application") :]
    code = section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")]
    destination.write_text(code + "\n")
    return destination


def _store_env(store_url: str, encryption_key: str) -> dict[str, str]:
    """The environment of a process whose secret store is this test's SQLite file, never the user's."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PI_SANDBOX_", "ANTHROPIC_")) and name != "SANDBOX_PROVIDER"
    }
    env["PI_SANDBOX_DATABASE_URL"] = store_url
    env["PI_SANDBOX_ENCRYPTION_KEY"] = encryption_key
    return env


def _leftovers(engine: docker.DockerClient, run: str, prefix: str) -> list[str]:
    """Name the containers of test run ``run`` whose session id starts with ``prefix``."""
    containers = engine.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"})
    return [container.name for container in containers if container.name.startswith(f"pi-sandbox-{prefix}")]


class TestDemo:
    def test_demo_exits_zero(
        self,
        *,
        pi_image: str,
        engine: docker.DockerClient,
        store_url: str,
        encryption_key: str,
        tmp_path: Path,
    ) -> None:
        """examples/demo.py passes every step, deletes its key and leaves no container."""
        run = f"demo-{random_tokens.token_hex(4)}"
        env = _store_env(store_url, encryption_key)
        # The demo's temporary folders go under this test's folder.
        env["TMPDIR"] = str(tmp_path)

        result = subprocess.run(
            [sys.executable, str(DEMO), "--label", f"{TEST_LABEL}=1", "--label", f"{RUN_LABEL}={run}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
        )

        assert result.returncode == 0, f"the demo failed:\n{result.stdout}\n{result.stderr}"
        assert "✗" not in result.stdout
        assert "steps passed" in result.stdout
        assert "RPC prompt" in result.stdout
        assert _leftovers(engine, run, "demo-") == []
        store = open_secret_store(store_url, keyring=KeyRing.from_string(encryption_key))
        try:
            assert store.list() == []
        finally:
            store.close()


class TestHostApp:
    def test_host_app_exits_zero(
        self,
        *,
        engine: docker.DockerClient,
        provider_config: dict[str, Any],
        model_server: MockModelServer,
        api_key: str,
        store_url: str,
        encryption_key: str,
        tmp_path: Path,
    ) -> None:
        """The README's host-application example prints the mock model's reply."""
        env = _store_env(store_url, encryption_key)
        env[KEY_ENV_VAR] = api_key
        env["ANTHROPIC_BASE_URL"] = model_server.base_url
        env["SANDBOX_PROVIDER"] = "e2e-docker"
        env["PI_SANDBOX_E2E_PROVIDER_CONFIG"] = json.dumps(provider_config)
        # The example's models.json goes under this test's folder.
        env["TMPDIR"] = str(tmp_path)

        result = subprocess.run(
            [sys.executable, str(WRAPPER), str(readme_host_app(tmp_path / "host_app.py"))],
            capture_output=True,
            text=True,
            env=env,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
        )

        output = result.stdout + result.stderr
        assert_absent(api_key, output, "the host application's output")
        assert result.returncode == 0, f"the host application failed:\n{output}"
        assert result.stdout.strip() == DEFAULT_REPLY
        assert model_server.rejected_count == 0
        assert len(model_server.requests) == 1
        assert _leftovers(engine, provider_config["extra_labels"][RUN_LABEL], "example-") == []
