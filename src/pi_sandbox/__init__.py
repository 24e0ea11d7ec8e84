"""Run the pi coding agent in isolated sandboxes, one per session.

Everything a host application needs is importable from here; the underscore
modules are private. `pi_sandbox.hookspecs` documents the plugin hooks and
`pi_sandbox.testing` holds the provider contract suite.
"""

from __future__ import annotations

import importlib.metadata

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
)
from ._plugins import PluginManager, available_providers, get_provider, plugin_manager, register_plugin
from ._provider import CleanupReport, ProviderCheck, Sandbox, SandboxProvider
from ._records import Capabilities, ExecResult, SandboxEvent, SandboxInfo, SandboxStatus
from ._secrets import SecretMaterial, SecretValue
from ._spec import Hardening, Mount, Resources, ResourceTier, SessionSpec
from .hookspecs import hookimpl

__version__ = importlib.metadata.version("pi-sandbox")

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
    "SecretValue",
    "SessionSpec",
    "__version__",
    "available_providers",
    "get_provider",
    "hookimpl",
    "plugin_manager",
    "register_plugin",
]
