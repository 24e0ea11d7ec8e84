"""The hooks a pi-sandbox plugin may implement.

A plugin is a module (or object) registered under the ``pi_sandbox`` entry-point
group, or passed to `pi_sandbox.register_plugin`. It marks its functions with
`pi_sandbox.hookimpl`. Every hook is called with keyword arguments, so a plugin
may accept fewer parameters than the spec lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from ._provider import SandboxProvider
    from ._records import SandboxEvent

__all__ = ["ProviderFactory", "ProviderRegistrar", "hookimpl", "hookspec"]

PROJECT_NAME = "pi_sandbox"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

ProviderFactory = Callable[..., "SandboxProvider"]


class ProviderRegistrar(Protocol):
    """The ``register`` callable passed to `register_providers`."""

    def __call__(self, name: str, factory: ProviderFactory) -> None:
        """Register ``factory`` under ``name``; ``factory(**config)`` returns a provider."""


@hookspec
def register_providers(register: ProviderRegistrar) -> None:
    """Register the sandbox providers this plugin offers.

    Called by the plugin manager once, the first time providers are listed or
    one is requested. Call ``register(name, factory)`` for each provider. The
    factory is called later, by `pi_sandbox.get_provider`, with the caller's
    keyword configuration. Import heavy dependencies (an SDK, a client library)
    inside the factory, not at module level, so that listing providers stays cheap.

    Args:
        register: Call it with a provider name (letters, digits, ``-``, ``_``) and a
            factory. A name registered by two plugins raises `PluginConflictError`.

    Returns:
        Nothing; results of this hook are ignored.
    """


@hookspec
def sandbox_event(event: SandboxEvent) -> None:
    """Observe a sandbox's life: created, paused, resumed, stopped, terminated, failed.

    Called by the provider's `Sandbox` and `SandboxProvider` methods right after
    the change succeeded (or, for ``failed``, right before the error is raised
    to the caller). Every implementation is called. An exception raised here is
    logged as a warning and does not affect the sandbox operation.

    Args:
        event: What happened to which sandbox; never carries a secret value.

    Returns:
        Nothing; results of this hook are ignored.
    """
