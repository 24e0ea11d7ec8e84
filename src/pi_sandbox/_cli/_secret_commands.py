"""``pi-sandbox secrets``: store, list, remove, enable, disable secrets and rotate the key."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import attrs
import click
from rich.table import Table
from rich.text import Text

from .._secrets import MAX_SECRET_BYTES, validate_secret_env_name
from ._context import Settings, key_source, print_json, stdout_console
from ._errors import CommandError, ExitCode

if TYPE_CHECKING:
    from .._store import KeyRing, SecretRecord, SqlSecretStore

__all__ = ["secrets"]

_STDIN_HELP = """Store the secret NAME, delivered to sandboxes as the environment variable --env.

\b
The value is read from standard input when it is not a terminal:
  printf %s "$ANTHROPIC_API_KEY" | pi-sandbox secrets set anthropic --env ANTHROPIC_API_KEY
In a terminal, it is asked for twice, hidden. It is never taken from the
command line, where other users could see it in the process list.

One trailing line ending (\\n or \\r\\n), such as the one `echo` adds, is
removed; --keep-newline stores the bytes exactly as read. Storing a NAME
that exists replaces its value and settings.
"""


@click.group()
def secrets() -> None:
    """Manage the encrypted secrets that sandboxes receive."""


@secrets.command("set", help=_STDIN_HELP)
@click.argument("name")
@click.option(
    "--env", "env_var", required=True, metavar="VAR", help="Environment variable name in the sandbox."
)
@click.option("--kind", metavar="KIND", help="A label for selecting secrets, such as llm.")
@click.option("--disabled", is_flag=True, help="Store it without delivering it to sandboxes.")
@click.option("--keep-newline", is_flag=True, help="Keep a trailing line ending instead of removing one.")
@click.pass_obj
def set_secret(
    settings: Settings, *, name: str, env_var: str, kind: str | None, disabled: bool, keep_newline: bool
) -> None:
    from .._store._validation import validate_kind, validate_secret_name  # noqa: PLC0415 - loads SQLAlchemy

    # Checked before the value is read, so that a typo in a name is reported before the prompt.
    validate_secret_name(name)
    validate_secret_env_name(env_var)
    validate_kind(kind)
    value = _read_value(keep_newline=keep_newline)
    with settings.store() as store:
        record = store.put(name, value, env_var=env_var, kind=kind, enabled=not disabled)
    state = "enabled" if record.enabled else "disabled"
    click.echo(
        f"stored secret {record.name!r} for {record.env_var} ({state}, key version {record.key_version})",
        err=True,
    )


def _read_value(*, keep_newline: bool) -> bytes:
    """Read the value from standard input, or prompt for it twice, hidden, in a terminal."""
    if sys.stdin is None:
        msg = "there is no standard input to read the value from"
        raise CommandError(msg, "pipe the value into the command", ExitCode.USAGE)
    if sys.stdin.isatty():
        typed: str = click.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)
        return typed.encode("utf-8")

    # Reading the maximum, a line ending and one byte more distinguishes a
    # too-long value from one at the limit, without reading an endless stream.
    data = sys.stdin.buffer.read(MAX_SECRET_BYTES + 3)
    if not keep_newline:
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
    if len(data) > MAX_SECRET_BYTES:
        msg = f"the value on standard input is longer than the maximum of {MAX_SECRET_BYTES} bytes"
        raise CommandError(msg, "store a shorter value", ExitCode.USAGE)
    if not data:
        msg = "standard input is empty, so there is no value to store"
        raise CommandError(
            msg,
            'pipe the value in, for example: printf %s "$VALUE" | pi-sandbox secrets set ...',
            ExitCode.USAGE,
        )
    return data


@secrets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def list_secrets(settings: Settings, as_json: bool) -> None:
    """List the stored secrets' names and settings, never their values."""
    with settings.store() as store:
        records = store.list()
    if as_json:
        print_json([_record_json(record) for record in records])
        return
    if not records:
        click.echo("no secrets stored; add one with `pi-sandbox secrets set`", err=True)
        return

    table = Table("name", "env var", "kind", "enabled", "key version", "updated (UTC)")
    for record in records:
        table.add_row(
            Text(record.name),
            Text(record.env_var),
            Text(record.kind or "-"),
            Text("yes" if record.enabled else "no"),
            Text(str(record.key_version)),
            Text(record.updated_at.strftime("%Y-%m-%d %H:%M:%S")),
        )
    stdout_console().print(table)


def _record_json(record: SecretRecord) -> dict[str, Any]:
    data = attrs.asdict(record)
    data["created_at"] = record.created_at.isoformat()
    data["updated_at"] = record.updated_at.isoformat()
    return data


@secrets.command("rm")
@click.argument("name")
@click.pass_obj
def remove_secret(settings: Settings, name: str) -> None:
    """Delete the secret NAME."""
    with settings.store() as store:
        store.delete(name)
    click.echo(f"deleted secret {name!r}", err=True)


@secrets.command("enable")
@click.argument("name")
@click.pass_obj
def enable_secret(settings: Settings, name: str) -> None:
    """Deliver the secret NAME to new sandboxes again."""
    with settings.store() as store:
        record = store.enable(name)
    click.echo(f"enabled secret {record.name!r} for {record.env_var}", err=True)


@secrets.command("disable")
@click.argument("name")
@click.pass_obj
def disable_secret(settings: Settings, name: str) -> None:
    """Keep the secret NAME stored but stop delivering it to new sandboxes."""
    with settings.store() as store:
        record = store.disable(name)
    click.echo(f"disabled secret {record.name!r}", err=True)


@secrets.command("rotate-key")
@click.option(
    "--drop-old",
    is_flag=True,
    help="Remove the old keys from the key ring once every secret uses the new one.",
)
@click.pass_obj
def rotate_key(settings: Settings, drop_old: bool) -> None:
    """Generate a new primary key and re-encrypt every secret with it.

    \b
    With a key file ($PI_SANDBOX_ENCRYPTION_KEY_FILE, or the embedded store's
    own), the new key ring replaces the file: first with the old keys and the
    new one, then, with --drop-old, with the new key alone.
    With $PI_SANDBOX_ENCRYPTION_KEY, the new value is printed on standard
    output, and you must set the variable to it: the old value no longer
    decrypts the secrets.
    """
    source = key_source(settings)
    with settings.store() as store:
        old = store.keyring
        new = old.with_new_key()
        if source.file is not None:
            # Written before the rotation: these keys decrypt the rows both
            # before and after it, so a failure in between loses nothing.
            new.write_file(source.file, replace=True)
        count = store.rotate(new)
        final = _drop_old_keys(store, new) if drop_old else new

    if source.file is not None:
        if final is not new:
            final.write_file(source.file, replace=True)
        click.echo(
            f"re-encrypted {count} secrets with key version {final.primary_version}; "
            f"{source.describe()} now holds key versions {list(final.versions)}",
            err=True,
        )
        return

    click.echo(final.export())
    click.echo(
        f"re-encrypted {count} secrets with key version {final.primary_version}; set "
        f"{source.variable} to the line printed on standard output now, because its old "
        "value no longer decrypts the secrets",
        err=True,
    )


def _drop_old_keys(store: SqlSecretStore, keyring: KeyRing) -> KeyRing:
    """Return ``keyring`` with only its primary key, if no stored secret uses another."""
    still_old = sorted(
        record.name for record in store.list() if record.key_version != keyring.primary_version
    )
    if still_old:
        # Another process wrote these with an old key after the rotation.
        click.echo(
            f"warning: kept the old keys, because secrets {still_old} still use them; "
            "run rotate-key --drop-old again",
            err=True,
        )
        return keyring
    final = keyring
    for version in keyring.versions[1:]:
        final = final.without(version)
    # Rotating to the primary key alone proves that every row decrypts without
    # the old keys. A row that does not raises DecryptionError here, before
    # the caller writes the shorter key ring.
    store.rotate(final)
    return final
