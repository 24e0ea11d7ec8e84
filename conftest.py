"""Fixtures shared by every test folder: the Docker engine and the local pi image.

A test that needs them is skipped with the reason when the engine cannot be
reached or the image cannot be built, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import pytest

REPO_ROOT = Path(__file__).resolve().parent
BUILD_SCRIPT = REPO_ROOT / "images" / "local" / "build.py"
# Names an existing image to test instead of building the local one.
IMAGE_ENV = "PI_SANDBOX_TEST_IMAGE"


def require_engine(reason: str) -> NoReturn:
    """Skip the calling test for ``reason``, or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Docker engine and the local image are required in CI: {reason}")
    pytest.skip(f"no Docker engine or image: {reason}")


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    """Yield a docker-py client of the engine the tests use."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        require_engine(str(error))
    yield client
    client.close()


@pytest.fixture(scope="session")
def local_image(engine: Any) -> str:
    """Return the tag of the image with the real pi, building it once if its inputs changed."""
    named = os.environ.get(IMAGE_ENV)
    if named:
        return named
    spec = importlib.util.spec_from_file_location("pi_sandbox_local_image_build", BUILD_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    try:
        tag: str = build.ensure_image()
    except build.ImageBuildError as error:
        require_engine(f"cannot build the local image: {error}")
    return tag
