"""Registers the ``docker`` provider with pi-sandbox's plugin manager.

Importing this module must stay cheap: the docker SDK is imported only when the
factory runs, so listing providers does not load it.
"""

from __future__ import annotations

from typing import Any

from pi_sandbox import SandboxProvider, hookimpl
from pi_sandbox.hookspecs import ProviderRegistrar


def _make_provider(**config: Any) -> SandboxProvider:
    from ._provider import DockerProvider  # noqa: PLC0415 - keeps listing providers cheap

    return DockerProvider(**config)


@hookimpl
def register_providers(register: ProviderRegistrar) -> None:
    """Register `DockerProvider` under the name ``docker``."""
    register("docker", _make_provider)
