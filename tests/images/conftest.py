"""Fixtures for the image tests: a reachable Docker engine and the local pi image.

Tests that need Docker are skipped with the reason when the engine cannot be
reached, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from types import ModuleType

import pytest
from entrypoint_helpers import BUILD_SCRIPT


def _docker_unreachable_reason() -> str | None:
    """Return why the Docker engine cannot be used, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "docker version timed out after 30s"
    if result.returncode != 0:
        return f"the Docker engine is not reachable: {result.stderr.strip()}"
    return None


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pi_sandbox_local_image_build", BUILD_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip the test, or fail it under CI=true, when Docker is unreachable."""
    reason = _docker_unreachable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but Docker is needed: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def local_image(docker_engine: None) -> str:
    """Return the tag of the local pi image, building it once if its inputs changed."""
    build = _load_build_module()
    try:
        tag: str = build.ensure_image()
    except build.ImageBuildError as error:
        pytest.fail(f"building the local image failed: {error}")
    return tag
