"""The exceptions that pi-sandbox raises.

Catch `PiSandboxError` for everything. Each subclass also inherits the
built-in exception it resembles, so ``except LookupError`` keeps working for
callers that do not know this library. Messages never contain a secret value.
"""

from __future__ import annotations

__all__ = [
    "CapabilityNotSupportedError",
    "ChannelClosedError",
    "ChannelTimeoutError",
    "DecryptionError",
    "ImageNotFoundError",
    "InvalidSecretError",
    "InvalidSpecError",
    "KeyConfigurationError",
    "PiSandboxError",
    "PluginConflictError",
    "ProtocolError",
    "ProviderNotFoundError",
    "ProviderUnavailableError",
    "SandboxExistsError",
    "SandboxFailedError",
    "SandboxNotFoundError",
    "SandboxStateError",
    "SchemaVersionError",
    "SecretNotFoundError",
    "SecretStoreError",
]


class PiSandboxError(Exception):
    """Base class of every error pi-sandbox raises; catch this for everything."""


class InvalidSpecError(PiSandboxError, ValueError):
    """A `SessionSpec` (or a part of it) breaks a rule.

    Attributes:
        field: The dotted name of the offending field, for example ``mounts[1].target``.
        rule: The rule it breaks, in words.
    """

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"invalid {field}: {rule}")


class InvalidSecretError(PiSandboxError, ValueError):
    """A secret's name, env var or value breaks a rule; the value is never quoted."""


class SecretNotFoundError(PiSandboxError, LookupError):
    """No stored secret has the requested name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"secret {name!r} not found; `pi-sandbox secrets list` shows the stored ones")


class DecryptionError(PiSandboxError):
    """A stored secret could not be decrypted with the configured keys.

    Attributes:
        names: The secrets that failed.
    """

    def __init__(self, message: str, names: tuple[str, ...] = ()) -> None:
        self.names = names
        super().__init__(message)


class KeyConfigurationError(PiSandboxError):
    """The encryption keys are missing, malformed or unsafely stored."""


class SecretStoreError(PiSandboxError, RuntimeError):
    """The secret store's database is unreachable, unsupported, or failed an operation.

    The message names the database (without its password) and the driver's
    one-line summary; it never contains statement parameters.
    """


class SchemaVersionError(PiSandboxError):
    """The secret store's database schema is newer than this version understands."""


class ProviderNotFoundError(PiSandboxError, LookupError):
    """No installed plugin registers a provider under the requested name.

    Attributes:
        name: The requested provider name.
        installed: The names that are installed.
    """

    def __init__(self, name: str, installed: tuple[str, ...]) -> None:
        self.name = name
        self.installed = installed
        listed = ", ".join(installed) if installed else "none"
        advice = "check the spelling, or install the plugin that provides it"
        if "docker" not in installed:
            advice += " (for Docker: pip install 'pi-sandbox[docker]')"
        super().__init__(f"no sandbox provider named {name!r}; installed providers: {listed}; {advice}")


class PluginConflictError(PiSandboxError, RuntimeError):
    """Two plugins register a provider under the same name."""


class ProviderUnavailableError(PiSandboxError, RuntimeError):
    """A provider cannot work on this host right now (for example, its daemon is down)."""


class ImageNotFoundError(PiSandboxError, LookupError):
    """The sandbox image is not present and the pull policy forbids or failed to fetch it."""

    def __init__(self, image: str, hint: str) -> None:
        self.image = image
        super().__init__(f"image {image!r} not found: {hint}")


class SandboxNotFoundError(PiSandboxError, LookupError):
    """No sandbox matches the given session id or provider id."""


class SandboxExistsError(PiSandboxError, FileExistsError):
    """A sandbox for this session id already exists."""


class SandboxStateError(PiSandboxError, RuntimeError):
    """The sandbox is in a state that does not allow the operation (for example exec on a paused one)."""


class CapabilityNotSupportedError(PiSandboxError, NotImplementedError):
    """The provider does not support this operation; see `SandboxProvider.capabilities`."""


class SandboxFailedError(PiSandboxError, RuntimeError):
    """Creating or starting a sandbox failed; everything the call made has been removed.

    Attributes:
        session_id: The session the sandbox was for.
        container_id: The provider's id for the failed sandbox, if one was made.
        exit_status: The sandbox process's exit status, if it exited.
        log_tail: The last lines of its output, with secret values redacted.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        container_id: str | None = None,
        exit_status: int | None = None,
        log_tail: str = "",
    ) -> None:
        self.session_id = session_id
        self.container_id = container_id
        self.exit_status = exit_status
        self.log_tail = log_tail
        text = message
        if log_tail:
            text = f"{message}\n--- last output of the sandbox ---\n{log_tail}"
        super().__init__(text)


class ChannelClosedError(PiSandboxError, EOFError):
    """The channel's stream ended: the sandbox's process exited or the channel was closed."""


class ChannelTimeoutError(PiSandboxError, TimeoutError):
    """No complete message arrived on the channel within the timeout."""


class ProtocolError(PiSandboxError, ValueError):
    """A line on the channel is not a JSON object; the line itself is not quoted."""
