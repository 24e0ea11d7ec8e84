"""Exit codes of the command line, and the one-line form of every error it reports."""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable

import attrs

from .._errors import (
    DecryptionError,
    ImageNotFoundError,
    InvalidSecretError,
    InvalidSpecError,
    KeyConfigurationError,
    PiSandboxError,
    PluginConflictError,
    ProviderNotFoundError,
    ProviderUnavailableError,
    SandboxExistsError,
    SandboxFailedError,
    SandboxNotFoundError,
    SandboxStateError,
    SchemaVersionError,
    SecretNotFoundError,
)

__all__ = ["CommandError", "ExitCode", "Failure", "describe_error", "join_words"]


class ExitCode(enum.IntEnum):
    """The exit statuses of ``pi-sandbox``; docs/cli.md and ``--help`` list the same table."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    PROVIDER_UNAVAILABLE = 4
    STORE_UNUSABLE = 5
    TIMED_OUT = 124
    INTERRUPTED = 130
    TERMINATED = 143


EXIT_CODE_HELP = """\b
Exit codes:
  0    success
  1    the operation failed
  2    usage error: unknown option, missing or invalid value
  3    not found: no such secret, session or provider
  4    provider unavailable: engine unreachable, image missing
  5    secret store unusable: key missing or wrong, database failed
  124  exec: the command timed out
  130  interrupted (Ctrl-C); 143: terminated (SIGTERM)
`exec` otherwise exits with the command's own exit code."""


class CommandError(PiSandboxError):
    """A failure the command line detects itself, with the hint and exit code to report.

    Attributes:
        hint: What the user can do about it.
        exit_code: The process's exit status.
    """

    def __init__(self, message: str, hint: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        self.hint = hint
        self.exit_code = exit_code
        super().__init__(message)


def join_words(words: Iterable[str]) -> str:
    """Join names for a message: ``a, b, c``, or ``none``."""
    return ", ".join(words) or "none"


@attrs.frozen
class Failure:
    """The report of one error: the ``error:`` line, the ``hint:`` line and the exit code."""

    message: str
    hint: str
    exit_code: ExitCode


_STORE_HINT = (
    "check PI_SANDBOX_DATABASE_URL (or --database-url) and PI_SANDBOX_ENCRYPTION_KEY or "
    "PI_SANDBOX_ENCRYPTION_KEY_FILE; `pi-sandbox doctor` checks both"
)


def describe_error(error: PiSandboxError) -> Failure:
    """Return the message, hint and exit code that report ``error``.

    Library messages never contain a secret value, so they are shown as they
    are, cut to their first line (a failed start appends the sandbox's output,
    which only ``--verbose`` shows).
    """
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, CommandError):
        return Failure(message, error.hint, error.exit_code)
    # These two messages end with the hint; the CLI gives it a line of its own.
    if isinstance(error, SecretNotFoundError):
        message = f"secret {error.name!r} not found"
    elif isinstance(error, ProviderNotFoundError):
        message = (
            f"no sandbox provider named {error.name!r}; installed providers: {join_words(error.installed)}"
        )
    return Failure(message, *_hint_and_code(error))


def _hint_and_code(error: PiSandboxError) -> tuple[str, ExitCode]:  # noqa: PLR0911 - one case per class
    if isinstance(error, SecretNotFoundError):
        return "`pi-sandbox secrets list` shows the stored secrets", ExitCode.NOT_FOUND
    if isinstance(error, SandboxNotFoundError):
        return (
            "`pi-sandbox ls` lists the sandboxes; pass the same --provider-option owner=... that created it",
            ExitCode.NOT_FOUND,
        )
    if isinstance(error, ProviderNotFoundError):
        advice = "check the spelling, or install the plugin that provides it"
        if "docker" not in error.installed:
            advice += " (for Docker: pip install 'pi-sandbox[docker]')"
        return advice, ExitCode.NOT_FOUND
    if isinstance(error, ImageNotFoundError):
        return (
            "build the local image with `python3 -m nox -s image`, or pass --image",
            ExitCode.PROVIDER_UNAVAILABLE,
        )
    if isinstance(error, ProviderUnavailableError | PluginConflictError):
        return "`pi-sandbox doctor` checks the provider and the engine", ExitCode.PROVIDER_UNAVAILABLE
    if isinstance(error, InvalidSecretError | InvalidSpecError):
        return "correct the value and run the command again; --help lists the rules", ExitCode.USAGE
    if isinstance(error, KeyConfigurationError | DecryptionError | SchemaVersionError):
        return _STORE_HINT, ExitCode.STORE_UNUSABLE
    if _is_store_error(error):
        return _STORE_HINT, ExitCode.STORE_UNUSABLE
    if isinstance(error, SandboxExistsError):
        return (
            "choose another --session-id, or remove the old sandbox with `pi-sandbox rm SESSION`",
            ExitCode.FAILED,
        )
    if isinstance(error, SandboxFailedError):
        return "run again with --verbose to see the sandbox's last output", ExitCode.FAILED
    if isinstance(error, SandboxStateError):
        return "`pi-sandbox ls` shows the sandbox's status", ExitCode.FAILED
    return "run again with --debug for the traceback", ExitCode.FAILED


def _is_store_error(error: PiSandboxError) -> bool:
    # A store error can only exist once the store module is loaded; commands
    # that only control sandboxes never load it (or SQLAlchemy).
    store = sys.modules.get("pi_sandbox._store")
    return store is not None and isinstance(error, store.SecretStoreError)
