"""The provider contract suite: one set of tests every sandbox provider must pass.

A provider's own test module subclasses `ProviderContract` and supplies three
fixtures::

    class TestMyProviderContract(ProviderContract):
        @pytest.fixture
        def provider_factory(self):
            return lambda: MyProvider(...)

        @pytest.fixture
        def contract_image(self):
            return "my-test-image:latest"

The image needs ``sh``, ``cat``, ``sleep``, ``head`` and ``kill``. Checks for a
capability the provider declares false are skipped with the reason; checks for
one declared true must pass. Contract tests run the sandbox's default working
directory as its workspace, and read secrets through ``$PI_SECRETS_DIR``.

This module is also registered as a pytest plugin (entry point
``pi_sandbox_testing``), which adds the ``contract`` marker. `mock_model`
offers a mock model server for end-to-end tests of host applications.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._suite import ProviderContract, contract_canary

__all__ = ["ProviderContract", "contract_canary"]


def __getattr__(name: str) -> Any:
    # The suite needs pytest; tools in this package such as mock_model do not,
    # so the suite loads only when one of its names is used.
    if name in __all__:
        return getattr(importlib.import_module("._suite", __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def pytest_configure(config: object) -> None:
    """Register the ``contract`` marker that every contract test carries."""
    config.addinivalue_line(  # type: ignore[attr-defined]
        "markers", "contract: a check from the pi-sandbox provider contract suite"
    )
