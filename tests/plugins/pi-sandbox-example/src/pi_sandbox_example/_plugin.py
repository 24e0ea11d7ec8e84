"""The plugin module named by the ``pi_sandbox`` entry point."""

from __future__ import annotations

from typing import Any

from pi_sandbox import SandboxProvider, hookimpl
from pi_sandbox.hookspecs import ProviderRegistrar


def _make_provider(**config: Any) -> SandboxProvider:
    # Imported on first use, so that listing providers stays cheap.
    from ._provider import ProcessProvider

    return ProcessProvider(**config)


@hookimpl
def register_providers(register: ProviderRegistrar) -> None:
    """Register the ``example`` provider."""
    register("example", _make_provider)
