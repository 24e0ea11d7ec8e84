"""Fixtures for the image tests; the engine and the local image come from the root conftest."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def docker_engine(engine: object) -> None:
    """Skip the test, or fail it under CI=true, when Docker is unreachable."""
