"""Run the pi coding agent in isolated sandboxes, one per session.

Everything a host application needs is importable from here; the underscore
modules are private. `pi_sandbox.hookspecs` documents the plugin hooks, and
`pi_sandbox.testing` contains the provider contract suite.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from ._channel import Channel
from ._errors import (
    CapabilityNotSupportedError,
    ChannelClosedError,
    ChannelTimeoutError,
    DecryptionError,
    ImageNotFoundError,
    InvalidSecretError,
    InvalidSpecError,
    KeyConfigurationError,
    PiSandboxError,
    PluginConflictError,
    ProtocolError,
    ProviderNotFoundError,
    ProviderUnavailableError,
    SandboxExistsError,
    SandboxFailedError,
    SandboxNotFoundError,
    SandboxStateError,
    SchemaVersionError,
    SecretNotFoundError,
    SecretStoreError,
)
from ._plugins import PluginManager, available_providers, get_provider, plugin_manager, register_plugin
from ._provider import CleanupReport, ProviderCheck, Sandbox, SandboxProvider
from ._records import Capabilities, ExecResult, SandboxEvent, SandboxInfo, SandboxStatus
from ._secrets import SecretMaterial, SecretValue
from ._spec import Hardening, Mount, Resources, ResourceTier, SessionSpec
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from ._store import KeyRing, SecretRecord, SecretStore, SqlSecretStore, open_secret_store

__version__ = importlib.metadata.version("pi-sandbox")

# The secret store needs SQLAlchemy, Alembic and cryptography. It loads on first
# use, so that a host that only controls sandboxes does not pay for it.
_LAZY = {
    "KeyRing": "._store",
    "SecretRecord": "._store",
    "SecretStore": "._store",
    "SqlSecretStore": "._store",
    "open_secret_store": "._store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "Capabilities",
    "CapabilityNotSupportedError",
    "Channel",
    "ChannelClosedError",
    "ChannelTimeoutError",
    "CleanupReport",
    "DecryptionError",
    "ExecResult",
    "Hardening",
    "ImageNotFoundError",
    "InvalidSecretError",
    "InvalidSpecError",
    "KeyConfigurationError",
    "KeyRing",
    "Mount",
    "PiSandboxError",
    "PluginConflictError",
    "PluginManager",
    "ProtocolError",
    "ProviderCheck",
    "ProviderNotFoundError",
    "ProviderUnavailableError",
    "ResourceTier",
    "Resources",
    "Sandbox",
    "SandboxEvent",
    "SandboxExistsError",
    "SandboxFailedError",
    "SandboxInfo",
    "SandboxNotFoundError",
    "SandboxProvider",
    "SandboxStateError",
    "SandboxStatus",
    "SchemaVersionError",
    "SecretMaterial",
    "SecretNotFoundError",
    "SecretRecord",
    "SecretStore",
    "SecretStoreError",
    "SecretValue",
    "SessionSpec",
    "SqlSecretStore",
    "__version__",
    "available_providers",
    "get_provider",
    "hookimpl",
    "open_secret_store",
    "plugin_manager",
    "register_plugin",
]
