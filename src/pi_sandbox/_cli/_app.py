"""The ``pi-sandbox`` command group: global options, logging, and how errors end the process."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from .._errors import PiSandboxError, SandboxFailedError
from ._context import Settings, parse_provider_option
from ._errors import EXIT_CODE_HELP, ExitCode, describe_error

__all__ = ["cli", "main"]

logger = logging.getLogger("pi_sandbox.cli")


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever `sys.stderr` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _Formatter(logging.Formatter):
    """Formats records as ``level: message``; tracebacks only with ``--debug``."""

    def __init__(self, *, debug: bool, verbose: bool) -> None:
        super().__init__()
        self.debug = debug
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if self.verbose:
            text = f"{text} [{record.name}]"
        if self.debug and record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


_handler = _CurrentStderrHandler()
_INTERRUPTED = "interrupted before the command finished"
_INTERRUPTED_HINT = "run the command again to finish it"


def _configure_logging(verbose: int, *, debug: bool) -> None:
    """Send pi-sandbox's log records to standard error: warnings, or more with ``-v``."""
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose > 1 or debug:
        level = logging.DEBUG
    package_logger = logging.getLogger("pi_sandbox")
    package_logger.setLevel(level)
    _handler.setFormatter(_Formatter(debug=debug, verbose=verbose > 0))
    if _handler not in package_logger.handlers:
        package_logger.addHandler(_handler)
    # Without this, a host's root handler would print every record a second time.
    package_logger.propagate = False


class _CommandLine(click.Group):
    """The root group; its `main` turns every error into one ``error:`` line and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        settings = Settings()
        package_logger = logging.getLogger("pi_sandbox")
        saved_logging = (package_logger.level, package_logger.propagate)
        try:
            result = super().main(
                args,
                prog_name or "pi-sandbox",
                complete_var,
                standalone_mode=False,
                obj=settings,
                **extra,
            )
            code = result if isinstance(result, int) else ExitCode.OK
        except click.UsageError as error:
            command = error.ctx.command_path if error.ctx else "pi-sandbox"
            code = _report(error.format_message(), f"`{command} --help` shows the usage", ExitCode.USAGE)
        except click.ClickException as error:
            code = _report(error.format_message(), "`pi-sandbox --help` shows the usage", error.exit_code)
        except click.Abort as error:
            # click turns Ctrl-C and the end of input at a prompt into Abort.
            if isinstance(error.__cause__, EOFError):
                code = _report(
                    "standard input ended before a value was read",
                    "pipe the value into the command, or run it in a terminal",
                    ExitCode.FAILED,
                )
            else:
                code = _report(_INTERRUPTED, _INTERRUPTED_HINT, ExitCode.INTERRUPTED)
        except KeyboardInterrupt:
            code = _report(_INTERRUPTED, _INTERRUPTED_HINT, ExitCode.INTERRUPTED)
        except PiSandboxError as error:
            code = _report_error(error, settings)
        except Exception as error:
            if settings.debug:
                traceback.print_exc(file=sys.stderr)
            code = _report(
                f"unexpected {type(error).__name__}: {error}",
                "run again with --debug for the traceback, and report it as a bug",
                ExitCode.FAILED,
            )
        finally:
            # A host or test that calls main() in its own process keeps its logging setup.
            package_logger.removeHandler(_handler)
            package_logger.setLevel(saved_logging[0])
            package_logger.propagate = saved_logging[1]
        if standalone_mode:
            sys.exit(int(code))
        return int(code)


def _report(message: str, hint: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    click.echo(f"hint: {hint}", err=True)
    return code


def _report_error(error: PiSandboxError, settings: Settings) -> int:
    if settings.debug:
        traceback.print_exception(error, file=sys.stderr)
    failure = describe_error(error)
    if isinstance(error, SandboxFailedError) and error.log_tail and (settings.verbose or settings.debug):
        # The provider redacts secret values from this output.
        click.echo("--- last output of the sandbox ---", err=True)
        click.echo(error.log_tail, err=True)
    return _report(failure.message, failure.hint, failure.exit_code)


_HELP = f"""Run the pi coding agent in isolated sandboxes, with API keys from an encrypted store.

\b
Secrets come from the store at --database-url or $PI_SANDBOX_DATABASE_URL
(else an embedded SQLite file), encrypted with $PI_SANDBOX_ENCRYPTION_KEY or
the key file in $PI_SANDBOX_ENCRYPTION_KEY_FILE (else the embedded store's
own key file).

{EXIT_CODE_HELP}
"""


@click.group(
    "pi-sandbox", cls=_CommandLine, help=_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--provider",
    "provider_name",
    metavar="NAME",
    help="Sandbox provider to use [default: $SANDBOX_PROVIDER, else docker].",
)
@click.option(
    "-o",
    "--provider-option",
    "provider_options",
    metavar="KEY=VALUE",
    multiple=True,
    help=(
        "Keyword for the provider, repeatable; VALUE is parsed as JSON when it is valid JSON. "
        "Docker: image, owner, network, state_dir, secrets_dir, pull_policy, extra_labels, ..."
    ),
)
@click.option(
    "--database-url",
    metavar="URL",
    help="Secret store database [default: $PI_SANDBOX_DATABASE_URL, else the embedded SQLite file].",
)
@click.option("-v", "--verbose", count=True, help="Log to standard error: -v for info, -vv for debug.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(importlib.metadata.version("pi-sandbox"), prog_name="pi-sandbox")
@click.pass_context
def cli(
    ctx: click.Context,
    *,
    provider_name: str | None,
    provider_options: tuple[str, ...],
    database_url: str | None,
    verbose: int,
    debug: bool,
) -> None:
    settings = ctx.ensure_object(Settings)
    settings.provider_name = provider_name
    settings.provider_options = dict(parse_provider_option(text) for text in provider_options)
    settings.database_url = database_url
    settings.verbose = verbose
    settings.debug = debug
    _configure_logging(verbose, debug=debug)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line with ``argv`` (default: this process's arguments) and exit."""
    cli.main(args=argv, prog_name="pi-sandbox")
    raise AssertionError("unreachable: main() in standalone mode exits")
