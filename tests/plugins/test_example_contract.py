"""The provider contract suite run against the example third-party plugin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pi_sandbox_example import ProcessProvider

from pi_sandbox import SandboxProvider, get_provider
from pi_sandbox.testing import ProviderContract


class TestExampleProviderContract(ProviderContract):
    """The example provider passes every check for the capabilities it declares."""

    @pytest.fixture
    def provider_factory(self, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], SandboxProvider]:
        # A short root keeps the attach socket's path under the Unix limit.
        root = Path(tmp_path_factory.mktemp("ex", numbered=True))
        return lambda: get_provider("example", root=root)


class TestExampleProviderDiscovery:
    def test_loaded_through_entry_point(self) -> None:
        """get_provider("example") returns the plugin's class, found through its entry point."""
        provider = get_provider("example")

        assert isinstance(provider, ProcessProvider)
        assert provider.check().usable
