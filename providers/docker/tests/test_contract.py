"""The pi-sandbox provider contract suite, run against `DockerProvider` on a real engine."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pi_sandbox.testing import ProviderContract
from pi_sandbox_docker import DockerProvider

pytestmark = pytest.mark.integration


class TestDockerProviderContract(ProviderContract):
    """Every contract check, with the real pi image and no network."""

    @pytest.fixture
    def provider_factory(
        self, provider_factory: Callable[[], DockerProvider]
    ) -> Callable[[], DockerProvider]:
        """Fresh providers of this test session (owner, secrets root, test label)."""
        return provider_factory

    @pytest.fixture
    def contract_image(self, test_image: str) -> str:
        """The image with real pi, which also has sh, cat, sleep, head and kill."""
        return test_image
