"""``ls``, ``exec``, ``stop``, ``rm``, ``cleanup`` and ``providers``: controlling sandboxes."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from .._errors import PiSandboxError, SandboxNotFoundError
from .._plugins import DEFAULT_PROVIDER, PROVIDER_ENV, get_provider, plugin_manager
from .._provider import ProviderCheck, Sandbox, SandboxProvider
from .._records import SandboxInfo
from ._context import Settings, parse_assignment, print_json, stdout_console
from ._errors import CommandError, ExitCode, describe_error

__all__ = ["cleanup", "exec_command", "list_sandboxes", "providers", "remove", "stop"]

logger = logging.getLogger("pi_sandbox.cli")


def find_sandbox(provider: SandboxProvider, session_id: str) -> Sandbox:
    """Return the sandbox of ``session_id``.

    Raises:
        SandboxNotFoundError: The provider has no sandbox for it.
    """
    sandbox = provider.find(session_id)
    if sandbox is None:
        msg = f"no sandbox for session {session_id!r} on provider {provider.name!r}"
        raise SandboxNotFoundError(msg)
    return sandbox


def _format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _info_json(info: SandboxInfo) -> dict[str, Any]:
    return {
        "session_id": info.session_id,
        "status": info.status.value,
        "provider": info.provider,
        "provider_id": info.provider_id,
        "image": info.image,
        "created_at": info.created_at.isoformat() if info.created_at else None,
        "labels": info.labels,
    }


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def list_sandboxes(settings: Settings, as_json: bool) -> None:
    """List the sandboxes of the provider (and its owner), newest first."""
    with settings.provider() as provider:
        infos = provider.list()
    infos.sort(key=lambda info: (info.created_at is not None, info.created_at, info.session_id), reverse=True)

    if as_json:
        print_json([_info_json(info) for info in infos])
        return
    if not infos:
        click.echo("no sandboxes", err=True)
        return
    table = Table("session", "status", "image", "created (UTC)", "provider id")
    for info in infos:
        table.add_row(
            Text(info.session_id),
            Text(info.status.value),
            Text(info.image or "-"),
            Text(_format_time(info.created_at)),
            Text(info.provider_id[:12]),
        )
    stdout_console().print(table)


@click.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("-w", "--workdir", metavar="DIR", help="Absolute working folder inside the sandbox.")
@click.option(
    "-e", "--env", "env", metavar="KEY=VALUE", multiple=True, help="Extra environment variable, repeatable."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Kill the command after this long.",
)
@click.option("-i", "--interactive", is_flag=True, help="Send this process's standard input to the command.")
@click.argument("session_id", metavar="SESSION")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_command(
    ctx: click.Context,
    *,
    workdir: str | None,
    env: tuple[str, ...],
    timeout: float | None,
    interactive: bool,
    session_id: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in the sandbox of SESSION and exit with its exit code.

    \b
    Options go before SESSION; everything after it is the command:
      pi-sandbox exec alice-1 ls -la /workspace
    The command runs without a shell; use `sh -c '...'` for one. Its standard
    output and standard error are printed when it has finished.
    """
    settings: Settings = ctx.obj
    # Option parsing stops at SESSION, so a "--" after it arrives as a word.
    argv = list(command[1:] if command[0] == "--" else command)
    if not argv:
        msg = "no command given after --"
        raise CommandError(
            msg, "write the command after SESSION, for example: exec SESSION -- ls", ExitCode.USAGE
        )
    variables = dict(parse_assignment(item, "--env") for item in env)
    stdin = sys.stdin.buffer.read() if interactive else None

    with settings.provider() as provider:
        sandbox = find_sandbox(provider, session_id)
        result = sandbox.exec(argv, env=variables, workdir=workdir, timeout=timeout, stdin=stdin)

    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.buffer.flush()
    if result.truncated:
        click.echo("warning: the command's output was cut at 10 MiB per stream", err=True)
    if result.timed_out:
        msg = f"the command did not finish within {timeout:g} seconds and was killed"
        raise CommandError(msg, "pass a longer --timeout", ExitCode.TIMED_OUT)
    # A status outside 0..255 (the provider's -1 for "unknown") would wrap around.
    ctx.exit(result.exit_code if 0 <= result.exit_code <= 255 else ExitCode.FAILED)


@click.command("stop")
@click.argument("session_id", metavar="SESSION")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Grace period before the processes are killed.",
)
@click.pass_obj
def stop(settings: Settings, session_id: str, timeout: float) -> None:
    """Stop the sandbox of SESSION; its files stay, and it can be resumed from Python."""
    with settings.provider() as provider:
        find_sandbox(provider, session_id).stop(timeout=timeout)
    click.echo(f"stopped the sandbox of session {session_id!r}", err=True)


@click.command("rm")
@click.argument("session_id", metavar="SESSION")
@click.option(
    "--remove-data",
    is_flag=True,
    help="Also delete the workspace and agent folders the provider made for it.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Grace period before the processes are killed.",
)
@click.pass_obj
def remove(settings: Settings, session_id: str, remove_data: bool, timeout: float) -> None:
    """Stop and remove the sandbox of SESSION and its secrets.

    Folders given with --workspace or --agent-dir belong to you and are never
    deleted, even with --remove-data.
    """
    with settings.provider() as provider:
        find_sandbox(provider, session_id).terminate(remove_data=remove_data, timeout=timeout)
    click.echo(f"removed the sandbox of session {session_id!r}", err=True)


@click.command("cleanup")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a sentence.")
@click.pass_obj
def cleanup(settings: Settings, as_json: bool) -> None:
    """Remove ended sandboxes and abandoned secrets folders."""
    with settings.provider() as provider:
        report = provider.cleanup()
    if as_json:
        print_json(
            {
                "sandboxes_removed": report.sandboxes_removed,
                "secret_dirs_removed": report.secret_dirs_removed,
            }
        )
        return
    click.echo(
        f"removed {report.sandboxes_removed} ended sandboxes and "
        f"{report.secret_dirs_removed} abandoned secrets folders"
    )


@click.command("providers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def providers(settings: Settings, as_json: bool) -> None:
    """List the installed providers, the distribution of each, and whether it works here.

    --provider-option values go to the provider that --provider selects.
    """
    selected = settings.provider_name or os.environ.get(PROVIDER_ENV) or DEFAULT_PROVIDER
    manager = plugin_manager()
    rows = []
    for name in manager.provider_names():
        config = settings.provider_options if name == selected else {}
        rows.append((name, manager.provider_distribution(name), _check_provider(name, config)))

    if as_json:
        print_json(
            [
                {
                    "name": name,
                    "distribution": distribution,
                    "selected": name == selected,
                    "usable": check.usable,
                    "detail": check.detail,
                    "hint": check.hint,
                }
                for name, distribution, check in rows
            ]
        )
        return
    if not rows:
        click.echo("no providers installed; install one with pip install 'pi-sandbox[docker]'", err=True)
        return
    table = Table("name", "distribution", "usable", "detail")
    for name, distribution, check in rows:
        marker = " (selected)" if name == selected else ""
        detail = check.detail if check.usable else f"{check.detail}; {check.hint}".rstrip("; ")
        table.add_row(
            Text(name + marker), Text(distribution), Text("✓" if check.usable else "✗"), Text(detail)
        )
    stdout_console().print(table)


def _check_provider(name: str, config: dict[str, Any]) -> ProviderCheck:
    """Make the provider and return its check; a provider that cannot be made is unusable."""
    try:
        with get_provider(name, **config) as provider:
            return provider.check()
    except PiSandboxError as error:
        failure = describe_error(error)
        return ProviderCheck(False, failure.message, failure.hint)
    except Exception as error:
        # A third-party plugin's bug must not hide the other providers.
        logger.warning("provider %s failed to load or check", name, exc_info=True)
        return ProviderCheck(False, f"{type(error).__name__}: {error}", "run with --debug for the traceback")
