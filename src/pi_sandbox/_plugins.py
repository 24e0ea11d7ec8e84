"""The plugin manager: loads plugins from entry points and finds providers."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import threading
from typing import Any

import attrs
import pluggy

from . import hookspecs
from ._errors import PluginConflictError, ProviderNotFoundError
from ._provider import SandboxProvider
from ._records import SandboxEvent
from .hookspecs import ProviderFactory

__all__ = [
    "DEFAULT_PROVIDER",
    "PluginManager",
    "available_providers",
    "get_provider",
    "plugin_manager",
    "register_plugin",
]

logger = logging.getLogger("pi_sandbox")

ENTRY_POINT_GROUP = "pi_sandbox"
DEFAULT_PROVIDER = "docker"
DISABLE_ENV = "PI_SANDBOX_DISABLE_PLUGINS"
PROVIDER_ENV = "SANDBOX_PROVIDER"
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@attrs.frozen
class _Registration:
    factory: ProviderFactory
    plugin: str
    distribution: str


def _blocked_names() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


class PluginManager:
    """A thin, typed wrapper around pluggy's manager, one method per hook.

    Most code uses the process-wide instance from `plugin_manager`; tests may make
    their own.
    """

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._distributions: dict[str, str] = {}
        self._providers: dict[str, _Registration] | None = None
        self._lock = threading.RLock()

    def load_entry_points(self) -> None:
        """Register every plugin in the ``pi_sandbox`` entry-point group not blocked.

        ``PI_SANDBOX_DISABLE_PLUGINS`` contains comma-separated names. An entry point
        is skipped when its name or its distribution's name is listed.
        """
        blocked = _blocked_names()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist else "unknown distribution"
            if entry_point.name in blocked or distribution in blocked:
                logger.debug("plugin %s blocked by %s", entry_point.name, DISABLE_ENV)
                self._pm.set_blocked(entry_point.name)
                continue
            if self._pm.get_plugin(entry_point.name) is not None or self._pm.is_blocked(entry_point.name):
                continue
            plugin = entry_point.load()
            self.register(plugin, name=entry_point.name, distribution=distribution)

    def register(self, plugin: object, *, name: str | None = None, distribution: str | None = None) -> str:
        """Register a plugin object or module and return the name it got.

        Host applications use this to observe `sandbox_event` without an entry point.
        """
        with self._lock:
            registered = self._pm.register(plugin, name=name)
            if registered is None:
                msg = f"plugin {name or plugin!r} is blocked by {DISABLE_ENV}"
                raise ValueError(msg)
            self._distributions[registered] = distribution or _module_name(plugin)
            self._providers = None
            return registered

    def unregister(self, plugin: object) -> None:
        """Remove a plugin registered earlier."""
        with self._lock:
            name = self._pm.get_name(plugin)
            self._pm.unregister(plugin)
            self._distributions.pop(name or "", None)
            self._providers = None

    def register_providers(self) -> dict[str, _Registration]:
        """Call every plugin's ``register_providers`` hook and return the registrations."""
        with self._lock:
            if self._providers is not None:
                return self._providers
            providers: dict[str, _Registration] = {}
            for impl in self._pm.hook.register_providers.get_hookimpls():
                plugin_name = impl.plugin_name
                distribution = self._distributions.get(plugin_name, plugin_name)

                def register(
                    name: str,
                    factory: ProviderFactory,
                    _plugin: str = plugin_name,
                    _dist: str = distribution,
                ) -> None:
                    _check_registration(name, factory, _dist)
                    if name in providers:
                        other = providers[name].distribution
                        msg = (
                            f"provider name {name!r} is registered by both {other!r} and {_dist!r}; "
                            f"uninstall one, or block one with {DISABLE_ENV}"
                        )
                        raise PluginConflictError(msg)
                    providers[name] = _Registration(factory, _plugin, _dist)

                impl.function(register=register)
            self._providers = providers
            return providers

    def sandbox_event(self, event: SandboxEvent) -> None:
        """Call every plugin's ``sandbox_event`` hook with ``event``."""
        self._pm.hook.sandbox_event(event=event)

    def provider_names(self) -> list[str]:
        """Return the sorted names of the registered providers."""
        return sorted(self.register_providers())

    def provider_distribution(self, name: str) -> str:
        """Return the distribution that registered provider ``name``."""
        return self._lookup(name).distribution

    def get_provider(self, name: str | None = None, **config: Any) -> SandboxProvider:
        """Make the provider registered as ``name``; see `pi_sandbox.get_provider`."""
        chosen = name or os.environ.get(PROVIDER_ENV) or DEFAULT_PROVIDER
        provider = self._lookup(chosen).factory(**config)
        if not isinstance(provider, SandboxProvider):
            kind = type(provider).__name__
            msg = f"the factory for provider {chosen!r} returned {kind}, not a SandboxProvider"
            raise TypeError(msg)
        return provider

    def _lookup(self, name: str) -> _Registration:
        providers = self.register_providers()
        if name not in providers:
            raise ProviderNotFoundError(name, tuple(sorted(providers)))
        return providers[name]


def _check_registration(name: str, factory: object, distribution: str) -> None:
    if not isinstance(name, str) or not _PROVIDER_NAME.fullmatch(name):
        msg = f"{distribution} registers an invalid provider name {name!r}: use letters, digits, '-', '_'"
        raise ValueError(msg)
    if not callable(factory):
        msg = f"{distribution} registers provider {name!r} with a factory that is not callable"
        raise TypeError(msg)


def _module_name(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__module__


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def plugin_manager() -> PluginManager:
    """Return the process-wide plugin manager, loading entry points on first use."""
    global _manager  # noqa: PLW0603 - one manager per process, made on first use
    with _manager_lock:
        if _manager is None:
            manager = PluginManager()
            manager.load_entry_points()
            _manager = manager
        return _manager


def _reset_plugin_manager() -> None:
    """Forget the process-wide manager so the next use reloads entry points (for tests)."""
    global _manager  # noqa: PLW0603
    with _manager_lock:
        _manager = None


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object (for example a `sandbox_event` observer) in this process."""
    return plugin_manager().register(plugin, name=name)


def get_provider(name: str | None = None, **config: Any) -> SandboxProvider:
    """Make a sandbox provider.

    Args:
        name: A registered provider name; defaults to ``$SANDBOX_PROVIDER``, then ``docker``.
        **config: Passed to the provider's factory (for Docker: ``image``, ``base_url``, ...).

    Raises:
        ProviderNotFoundError: No plugin registers ``name``; the message lists the installed ones.
        PluginConflictError: Two plugins register the same name.
    """
    return plugin_manager().get_provider(name, **config)


def available_providers() -> list[str]:
    """Return the sorted names of the installed, unblocked providers."""
    return plugin_manager().provider_names()
