"""Run a script with a Docker provider that labels its containers as test containers.

Usage: ``python run_with_test_provider.py SCRIPT``, with
``PI_SANDBOX_E2E_PROVIDER_CONFIG`` holding the `DockerProvider` keywords as
JSON. The provider registers as ``e2e-docker`` through the ordinary plugin
hook, so the script gets it from ``pi_sandbox.get_provider()`` when
``SANDBOX_PROVIDER=e2e-docker``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from typing import Any

import pi_sandbox
from pi_sandbox.hookspecs import ProviderRegistrar
from pi_sandbox_docker import DockerProvider

PROVIDER_NAME = "e2e-docker"
CONFIG_ENV = "PI_SANDBOX_E2E_PROVIDER_CONFIG"


class E2EProviderPlugin:
    """Registers a `DockerProvider` made with the test session's configuration."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config

    @pi_sandbox.hookimpl
    def register_providers(self, register: ProviderRegistrar) -> None:
        """Register the test provider under `PROVIDER_NAME`."""
        register(PROVIDER_NAME, lambda **extra: DockerProvider(**{**self._config, **extra}))


def main() -> None:
    """Register the test provider, then run the script named by the first argument as ``__main__``."""
    script = sys.argv[1]
    pi_sandbox.register_plugin(E2EProviderPlugin(json.loads(os.environ[CONFIG_ENV])), name=PROVIDER_NAME)
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
