"""``pi-sandbox run``: a sandboxed drop-in for ``pi --mode rpc`` on standard input and output.

Standard input is copied line by line to pi's RPC stream, and every line pi
writes goes to standard output, flushed at once. The sandbox's standard input
stays open after one attach ends, so the end of this process's input cannot
reach pi as an end of file. Instead, once standard input ends, the bridge
waits until pi has responded to every command it forwarded, and its output
has been quiet for a moment, then stops the sandbox. pi 0.73.1 writes
exactly one ``"type": "response"`` line per command, except for
``extension_ui_response`` messages, which get none. pi shuts down on
SIGTERM as it does at the end of its input. The lines it writes until then
are forwarded, and the sandbox is removed when its stream ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets as random_tokens
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Final

import attrs
import click
from rich.console import Console

from .._channel import Channel
from .._errors import ChannelClosedError, ChannelTimeoutError, PiSandboxError
from .._provider import Sandbox, SandboxProvider
from .._records import SandboxStatus
from .._secrets import SecretMaterial
from .._spec import DEFAULT_COMMAND, ResourceTier, SessionSpec
from ._context import Settings, parse_assignment, stderr_is_terminal
from ._errors import CommandError, ExitCode

__all__ = ["run"]

logger = logging.getLogger("pi_sandbox.cli")

# How long one wait for pi's next line lasts, so that the end of standard
# input and signals are noticed while pi is silent.
_POLL_SECONDS: Final = 0.1
# After standard input ended and every command got its response, pi's output
# must be silent this long before the sandbox is stopped. Events that follow a
# response within this time are still forwarded.
_QUIET_SECONDS: Final = 0.3
# The grace period pi gets to exit after SIGTERM before it is killed.
_STOP_GRACE_SECONDS: Final = 10.0
# How long the stream may stay open after the stop returned.
_STREAM_END_SECONDS: Final = 5.0
_READ_SIZE: Final = 64 * 1024


class _Stopped(BaseException):
    """Raised in the main thread by the SIGTERM and SIGHUP handlers.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    on the way swallows it, and a create in progress rolls back.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class _OutputClosedError(Exception):
    """The reader of standard output closed it."""


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into `_Stopped` in the main thread while the block runs."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Stopped(signum)

    caught = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, handler) for signum in caught}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP while the block runs, so that cleanup finishes."""
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in caught}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@attrs.define
class _ResponseTracker:
    """Counts the commands forwarded to pi and the responses it wrote back."""

    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    commands: int = 0
    responses: int = 0

    def forwarded(self, line: bytes) -> None:
        """Count ``line`` as a command that pi responds to, unless it is a reply to pi's own request."""
        if b"extension_ui_response" in line and _message_type(line) == "extension_ui_response":
            return
        with self._lock:
            self.commands += 1

    def received(self, line: bytes) -> None:
        """Count ``line`` if it is a response."""
        if b'"response"' in line and _message_type(line) == "response":
            with self._lock:
                self.responses += 1

    def all_responded(self) -> bool:
        """Return whether pi has responded to every command forwarded so far."""
        with self._lock:
            return self.responses >= self.commands


def _message_type(line: bytes) -> object:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message.get("type") if isinstance(message, dict) else None


def _pump_stdin(fd: int, channel: Channel, tracker: _ResponseTracker, done: threading.Event) -> None:
    """Copy lines from ``fd`` to ``channel`` until the input ends or the channel closes.

    Reads the file descriptor directly, not `sys.stdin`, so that this daemon
    thread holds no lock of the interpreter's stdin object at exit.
    """
    pending = bytearray()

    def forward(line: bytes) -> None:
        tracker.forwarded(line)
        channel.send(line)

    try:
        while chunk := os.read(fd, _READ_SIZE):
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                forward(bytes(pending[start:end]))
                start = end + 1
            del pending[:start]
        if pending:
            forward(bytes(pending))
    except ChannelClosedError:
        logger.debug("pi's input closed before standard input ended")
    except OSError as error:
        logger.warning("cannot read standard input: %s", error.strerror)
    finally:
        done.set()


@attrs.define
class _Bridge:
    """Moves lines between this process and pi until the input ends and pi is stopped."""

    sandbox: Sandbox
    channel: Channel
    stdin_fd: int
    stdout: BinaryIO
    drain_timeout: float
    tracker: _ResponseTracker = attrs.field(factory=_ResponseTracker)
    input_ended: threading.Event = attrs.field(factory=threading.Event)

    def run(self) -> int:
        """Bridge the streams and return the exit code for this process."""
        pump = threading.Thread(
            target=_pump_stdin,
            args=(self.stdin_fd, self.channel, self.tracker, self.input_ended),
            name="pi-sandbox-stdin",
            daemon=True,
        )
        pump.start()

        last_line_at = time.monotonic()
        input_ended_at: float | None = None
        stopper: threading.Thread | None = None
        stop_started_at = 0.0
        while True:
            try:
                line = self.channel.receive_line(timeout=_POLL_SECONDS)
            except ChannelTimeoutError:
                line = None
            except ChannelClosedError:
                break

            now = time.monotonic()
            if line is not None:
                try:
                    self.stdout.write(line + b"\n")
                    self.stdout.flush()
                except BrokenPipeError:
                    raise _OutputClosedError from None
                last_line_at = now
                self.tracker.received(line)

            if stopper is None and self.input_ended.is_set():
                if input_ended_at is None:
                    input_ended_at = now
                    logger.debug("standard input ended; waiting for pi's remaining responses")
                responded = self.tracker.all_responded()
                quiet = now - max(last_line_at, input_ended_at) >= _QUIET_SECONDS
                if (responded and quiet) or now - input_ended_at >= self.drain_timeout:
                    if not responded:
                        logger.warning(
                            "pi did not respond to every command within %g seconds after "
                            "standard input ended; stopping it",
                            self.drain_timeout,
                        )
                    elif not quiet:
                        logger.warning(
                            "pi was still writing events %g seconds after standard input ended; stopping it",
                            self.drain_timeout,
                        )
                    stopper = self._start_stop()
                    stop_started_at = now
            elif stopper is not None and now - stop_started_at > _STOP_GRACE_SECONDS + _STREAM_END_SECONDS:
                logger.warning("pi's stream stayed open after the sandbox was stopped")
                break

        if stopper is not None:
            stopper.join(timeout=_STREAM_END_SECONDS)
            return ExitCode.OK
        return self._ended_by_itself()

    def _start_stop(self) -> threading.Thread:
        """Stop the sandbox in another thread, while this one forwards pi's last lines."""

        def stop() -> None:
            try:
                if self.sandbox.provider.capabilities.stop_start:
                    self.sandbox.stop(timeout=_STOP_GRACE_SECONDS)
                else:
                    self.sandbox.terminate(timeout=_STOP_GRACE_SECONDS)
            except PiSandboxError:
                logger.warning(
                    "could not stop the sandbox of session %s", self.sandbox.session_id, exc_info=True
                )

        thread = threading.Thread(target=stop, name="pi-sandbox-stop", daemon=True)
        thread.start()
        return thread

    def _ended_by_itself(self) -> int:
        """Report pi's exit before standard input ended; a crash is an error."""
        status = self.sandbox.refresh()
        if status is SandboxStatus.ERROR:
            # The provider redacts the sandbox's secret values from its logs.
            logger.info("the last output of pi:\n%s", self.sandbox.logs(tail=20).rstrip())
            msg = f"pi exited with an error in the sandbox of session {self.sandbox.session_id!r}"
            raise CommandError(msg, "run again with --verbose to see pi's last output", ExitCode.FAILED)
        logger.info("pi exited before standard input ended (sandbox status %s)", status.value)
        return ExitCode.OK


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.option(
    "--workspace",
    required=True,
    type=click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path),
    help="Host folder mounted at /workspace.",
)
@click.option("--image", metavar="IMAGE", help="Sandbox image [default: the provider's].")
@click.option(
    "--session-id", metavar="ID", help="Session id: letters, digits, '-', '_' [default: cli-<random>]."
)
@click.option("--network", metavar="NAME", help="bridge, none, host, or a network name [default: bridge].")
@click.option(
    "--provider", "provider_name", metavar="NAME", help="Sandbox provider, overriding the global --provider."
)
@click.option(
    "--agent-dir",
    type=click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path),
    help="Host folder for pi's sessions, mounted at /data/agent [default: a per-session folder].",
)
@click.option(
    "-e",
    "--env",
    "env",
    metavar="KEY=VALUE",
    multiple=True,
    help="Non-secret environment variable, repeatable.",
)
@click.option(
    "--secret", "secret_names", metavar="NAME", multiple=True, help="Deliver only these secrets, repeatable."
)
@click.option(
    "--secret-kind",
    "secret_kinds",
    metavar="KIND",
    multiple=True,
    help="Deliver only secrets of these kinds.",
)
@click.option("--no-secrets", is_flag=True, help="Deliver no secrets and do not open the store.")
@click.option(
    "--resources",
    type=click.Choice([tier.value for tier in ResourceTier]),
    default=ResourceTier.SMALL.value,
    show_default=True,
    help="Resource tier: CPUs, memory and process limits.",
)
@click.option(
    "--remove-data", is_flag=True, help="Delete the per-session folders the provider made, at the end."
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="After standard input ends, how long to wait for pi's outstanding responses.",
)
@click.argument("pi_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- PI_ARGS]...")
@click.pass_obj
def run(
    settings: Settings,
    *,
    workspace: Path,
    image: str | None,
    session_id: str | None,
    network: str | None,
    provider_name: str | None,
    agent_dir: Path | None,
    env: tuple[str, ...],
    secret_names: tuple[str, ...],
    secret_kinds: tuple[str, ...],
    no_secrets: bool,
    resources: str,
    remove_data: bool,
    drain_timeout: float,
    pi_args: tuple[str, ...],
) -> None:
    """Run `pi --mode rpc` in a new sandbox, bridged to standard input and output.

    \b
    Each line on standard input goes to pi's RPC stream; each line pi writes
    goes to standard output, nothing else does. When standard input ends, pi
    responds to the commands it received, then the sandbox is stopped and
    removed.
    Ctrl-C and SIGTERM remove it too. Arguments after -- go to pi:
      echo '{"type":"get_state","id":"1"}' | pi-sandbox run --workspace . -- --no-session
    The sandbox receives the enabled secrets of the store.
    """
    if (secret_names or secret_kinds) and no_secrets:
        msg = "--no-secrets cannot be combined with --secret or --secret-kind"
        raise CommandError(msg, "drop one of them", ExitCode.USAGE)
    spec = SessionSpec(
        session_id=session_id or f"cli-{random_tokens.token_hex(6)}",
        image=image,
        command=(*DEFAULT_COMMAND, *pi_args),
        env=dict(parse_assignment(item, "--env") for item in env),
        workspace=workspace,
        agent_dir=agent_dir,
        network=network or "bridge",
        resources=resources,
    )
    material = SecretMaterial()
    if not no_secrets:
        with settings.store() as store:
            material = store.material(names=secret_names or None, kinds=secret_kinds or None)
    provider = settings.provider(provider_name)
    try:
        code = _run_session(provider, spec, material, drain_timeout, remove_data=remove_data)
    finally:
        provider.close()
    if code != ExitCode.OK:
        click.get_current_context().exit(code)


def _run_session(
    provider: SandboxProvider,
    spec: SessionSpec,
    material: SecretMaterial,
    drain_timeout: float,
    *,
    remove_data: bool,
) -> int:
    """Create the sandbox, bridge it until the input ends or a signal arrives, then remove it."""
    sandbox: Sandbox | None = None
    code: int = ExitCode.OK
    try:
        with _signals_raise():
            sandbox = _create(provider, spec, material)
            with sandbox.attach() as channel:
                stdout = sys.stdout.buffer
                code = _Bridge(sandbox, channel, sys.stdin.fileno(), stdout, drain_timeout).run()
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    except _Stopped as stopped:
        code = 128 + stopped.signum
    except _OutputClosedError:
        # Point standard output at /dev/null, so that the interpreter's flush at
        # exit does not raise BrokenPipeError again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = ExitCode.FAILED
        click.echo("error: standard output was closed, so pi's output has nowhere to go", err=True)
        click.echo("hint: keep reading standard output until pi-sandbox run exits", err=True)
    finally:
        if sandbox is not None:
            with _signals_ignored():
                sandbox.terminate(remove_data=remove_data, timeout=_STOP_GRACE_SECONDS)
            logger.info("removed the sandbox of session %s", spec.session_id)

    if code in {ExitCode.INTERRUPTED, 128 + signal.SIGTERM, 128 + signal.SIGHUP}:
        where = f"; removed the sandbox of session {spec.session_id!r}" if sandbox is not None else ""
        click.echo(f"interrupted{where}", err=True)
    return code


def _create(provider: SandboxProvider, spec: SessionSpec, material: SecretMaterial) -> Sandbox:
    """Create the sandbox, with a spinner on standard error when it is a terminal."""
    logger.info("creating the sandbox of session %s", spec.session_id)
    if not stderr_is_terminal():
        return provider.create(spec, material)
    console = Console(stderr=True, highlight=False)
    with console.status(f"creating the sandbox of session {spec.session_id}"):
        sandbox = provider.create(spec, material)
    console.print(f"session {spec.session_id}: pi is running; end standard input (Ctrl-D) to stop it")
    return sandbox
