"""State and helpers shared by every command: global options, provider, store and output."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click
from rich.console import Console

from .._plugins import get_provider
from .._provider import SandboxProvider
from ._errors import CommandError, ExitCode
from ._progress import PullProgress

if TYPE_CHECKING:
    from .._store import SqlSecretStore

__all__ = [
    "KeySource",
    "Settings",
    "key_source",
    "parse_assignment",
    "parse_provider_option",
    "print_json",
    "stdout_console",
]

logger = logging.getLogger("pi_sandbox.cli")

_PIPE_WIDTH = 1000
_OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.define
class Settings:
    """The global options of one ``pi-sandbox`` invocation.

    Attributes:
        provider_name: ``--provider``; None means ``$SANDBOX_PROVIDER``, then ``docker``.
        provider_options: ``--provider-option`` keywords for the provider's factory.
        database_url: ``--database-url``; None means ``$PI_SANDBOX_DATABASE_URL``,
            then the embedded SQLite file.
        verbose: How many times ``-v`` was given.
        debug: ``--debug``: show tracebacks.
    """

    provider_name: str | None = None
    provider_options: dict[str, Any] = attrs.Factory(dict)
    database_url: str | None = None
    verbose: int = 0
    debug: bool = False

    def provider(self, name: str | None = None, **config: Any) -> SandboxProvider:
        """Make the provider ``name`` (else the global one) with the global options plus ``config``.

        Raises:
            ProviderNotFoundError: No plugin registers that name.
            CommandError: The provider rejects an option (exit code 2).
        """
        options = {**self.provider_options, **config}
        chosen = name or self.provider_name
        resolved = chosen or os.environ.get("SANDBOX_PROVIDER") or "docker"
        if resolved == "docker" and "pull_progress" not in options and stderr_is_terminal():
            options["pull_progress"] = PullProgress()
        try:
            return get_provider(chosen, **options)
        except (TypeError, ValueError) as error:
            if not options:
                raise
            # The factory's own argument checks: an unknown keyword or a bad value.
            option_names = ", ".join(sorted(options))
            msg = f"the provider rejected its options ({option_names}): {error}"
            raise CommandError(
                msg,
                "check the --provider-option names and values in the provider's documentation",
                ExitCode.USAGE,
            ) from None

    def store(self) -> SqlSecretStore:
        """Open the secret store from ``--database-url`` or the environment."""
        from .._store import open_secret_store  # noqa: PLC0415 - loads SQLAlchemy only when needed

        return open_secret_store(self.database_url)


@attrs.frozen
class KeySource:
    """The origin of the store's keys: a key file, or an environment variable.

    Attributes:
        file: The key file, or None when the keys are in ``variable``.
        variable: The environment variable that contains the keys, or None.
        embedded: The file is the embedded store's own, created on first use.
    """

    file: Path | None
    variable: str | None
    embedded: bool = False

    def describe(self) -> str:
        """Name the source for a message."""
        return f"key file {self.file}" if self.file is not None else f"${self.variable}"


def key_source(settings: Settings) -> KeySource:
    """Find where `open_secret_store` takes the keys from, by the same rules.

    Raises:
        CommandError: No key is configured for a database other than the
            embedded one (exit code 5).
    """
    from .._store import (  # noqa: PLC0415 - the store loads SQLAlchemy
        DATABASE_URL_ENV,
        ENCRYPTION_KEY_ENV,
        ENCRYPTION_KEY_FILE_ENV,
        default_key_file,
    )

    if os.environ.get(ENCRYPTION_KEY_ENV, "").strip():
        return KeySource(None, ENCRYPTION_KEY_ENV)
    key_file = os.environ.get(ENCRYPTION_KEY_FILE_ENV, "").strip()
    if key_file:
        return KeySource(Path(key_file).expanduser(), None)
    if settings.database_url is None and not os.environ.get(DATABASE_URL_ENV, "").strip():
        return KeySource(default_key_file(), None, embedded=True)
    msg = "no encryption key is configured for the secret store's database"
    raise CommandError(
        msg,
        f"set {ENCRYPTION_KEY_ENV} to the base64 of 32 random bytes, or {ENCRYPTION_KEY_FILE_ENV} "
        "to a key file; the same key that encrypted the stored secrets",
        ExitCode.STORE_UNUSABLE,
    )


def parse_provider_option(text: str) -> tuple[str, Any]:
    """Split ``KEY=VALUE``; the value is parsed as JSON when it is valid JSON, else kept as text.

    Raises:
        click.BadParameter: There is no ``=`` or the key is not an identifier.
    """
    key, value = parse_assignment(text, "--provider-option")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` into its parts, checking that the key is an identifier.

    Raises:
        click.BadParameter: There is no ``=`` or the key is not an identifier.
    """
    key, separator, value = text.partition("=")
    if not separator or not _OPTION_KEY.fullmatch(key):
        msg = f"{option} takes KEY=VALUE with KEY made of letters, digits and '_', got {key!r}"
        raise click.BadParameter(msg)
    return key, value


def stdout_console() -> Console:
    """Return a console on standard output, for tables.

    Outside a terminal, rich assumes 80 columns and wraps table cells. A wide
    width keeps each row on one line, for grep and other tools.
    """
    width = None if sys.stdout.isatty() else _PIPE_WIDTH
    return Console(highlight=False, width=width)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to standard output."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def stderr_is_terminal() -> bool:
    """Return whether standard error is a terminal, where progress spinners make sense."""
    return sys.stderr.isatty()
