"""Raw streams to container processes: attach channels and exec.

Both use the engine's "hijacked" HTTP connections: after the response
headers, the connection carries the process's standard input one way and its
multiplexed output the other. Without a terminal, the engine prefixes each
block of output with an 8-byte header: the stream (1 stdout, 2 stderr, 3 the
engine's own errors), three zero bytes, and the block's length as a 32-bit
big-endian number. `FrameDecoder` splits them.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import time
from typing import Any, Final

import docker.errors

from pi_sandbox import Channel, ChannelClosedError, ExecResult, ProviderUnavailableError

__all__ = ["DockerChannel", "FrameDecoder", "HijackedConnection", "open_attach", "run_exec"]

logger = logging.getLogger("pi_sandbox.docker")

_HEADER_SIZE: Final = 8
_STDOUT: Final = 1
# Reads ask for this much at once: large reads keep the per-call overhead of
# Python small next to the bytes moved.
_READ_SIZE: Final = 1024 * 1024
_WRITE_SIZE: Final = 256 * 1024
_STDERR_TAIL: Final = 64 * 1024
_UPGRADE_HEADERS: Final = {"Connection": "Upgrade", "Upgrade": "tcp"}

# Prepended to the command of an exec that has a timeout: the shell prints its
# process id on stderr, then replaces itself with the command, which keeps that
# id. The id is what the timeout kills. The engine starts each exec as the
# leader of a new process group, so killing the group also ends the command's
# children.
_PID_PRELUDE: Final = ("sh", "-c", 'echo "$$" >&2 && exec "$@"', "sh")
_KILL_SCRIPT: Final = 'kill -9 -"$0" 2>/dev/null || kill -9 "$0"'
# How long a killed exec's stream may take to end before it is abandoned.
_KILL_GRACE: Final = 5.0
_PID_LINE_MAX: Final = 32


class FrameDecoder:
    """Splits the engine's multiplexed output into standard output and standard error.

    Feed it bytes as they arrive, split anywhere; payloads are passed on as soon
    as they arrive, without waiting for the rest of their frame.
    """

    __slots__ = ("_header", "_remaining", "_stream")

    def __init__(self) -> None:
        self._header = b""
        self._remaining = 0
        self._stream = _STDOUT

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Return the standard output and standard error bytes contained in ``data``."""
        if self._header:
            data = self._header + data
            self._header = b""
        view = memoryview(data)
        size = len(data)
        out: list[memoryview] = []
        err: list[memoryview] = []
        position = 0

        if self._remaining:
            take = min(self._remaining, size)
            (out if self._stream == _STDOUT else err).append(view[:take])
            self._remaining -= take
            position = take

        while position + _HEADER_SIZE <= size:
            stream = data[position]
            length = int.from_bytes(data[position + 4 : position + 8], "big")
            position += _HEADER_SIZE
            take = min(length, size - position)
            if take:
                (out if stream == _STDOUT else err).append(view[position : position + take])
            position += take
            if take < length:
                self._remaining = length - take
                self._stream = stream
                break

        if position < size and not self._remaining:
            self._header = bytes(view[position:])
        return _join(out), _join(err)


def _join(parts: list[memoryview]) -> bytes:
    if not parts:
        return b""
    if len(parts) == 1:
        return parts[0].tobytes()
    return b"".join(parts)


class HijackedConnection:
    """The socket of an upgraded engine request, plus bytes the HTTP reader had already buffered."""

    def __init__(self, response: Any) -> None:
        self._response = response
        try:
            reader = response.raw._fp.fp
            sock = reader.raw._sock
        except AttributeError:
            sock = None
        if not isinstance(sock, socket.socket):
            response.close()
            msg = (
                "attach and exec need an engine reached over a unix socket or TCP "
                "(DOCKER_HOST=unix://... or tcp://...); ssh:// and named pipes are not supported"
            )
            raise ProviderUnavailableError(msg)

        # The HTTP reader may have read past the response headers into the
        # stream. read1 returns what it buffered, or, with the socket
        # non-blocking, nothing instead of waiting.
        sock.setblocking(False)
        try:
            leftover = reader.read1(_READ_SIZE) or b""
        except (BlockingIOError, ssl.SSLWantReadError):
            leftover = b""
        sock.setblocking(True)
        self.sock = sock
        self.leftover = leftover

    def wait(self, timeout: float | None, *, write: bool = False) -> tuple[bool, bool]:
        """Wait until the socket is readable (or writable, when ``write``); return both flags."""
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending() > 0:
            return True, False
        readable, writable, _ = select.select([self.sock], [self.sock] if write else [], [], timeout)
        return bool(readable), bool(writable)

    def close(self) -> None:
        """Close the connection; a thread blocked reading it then reads the end of the stream."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._response.close()


def _hijack(api: Any, response: Any) -> HijackedConnection:
    api._raise_for_status(response)
    return HijackedConnection(response)


def open_attach(api: Any, container_id: str) -> HijackedConnection:
    """Attach to a container's standard input, output and error as a raw stream."""
    response = api.post(
        api._url("/containers/{0}/attach", container_id),
        None,
        params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1},
        headers=_UPGRADE_HEADERS,
        stream=True,
    )
    return _hijack(api, response)


def _start_exec(api: Any, exec_id: str) -> HijackedConnection:
    response = api._post_json(
        api._url("/exec/{0}/start", exec_id),
        headers=_UPGRADE_HEADERS,
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    return _hijack(api, response)


class DockerChannel(Channel):
    """A `Channel` over a container's attach stream: JSON lines in on stdin, out on stdout.

    Standard error is not part of the RPC stream. Its last 64 KiB stay in
    `stderr_tail`; `Sandbox.logs` returns all of it. Closing the channel closes
    only the connection: the container's stdin stays open for the next attach.
    """

    def __init__(self, connection: HijackedConnection) -> None:
        super().__init__()
        self._connection = connection
        self._decoder = FrameDecoder()
        self._stderr = bytearray()
        self._ready = self._split(connection.leftover)
        self._stream_ended = False

    @property
    def stderr_tail(self) -> bytes:
        """The last 64 KiB the process wrote to standard error while attached."""
        return bytes(self._stderr)

    def _split(self, data: bytes) -> bytes:
        out, err = self._decoder.feed(data)
        if err:
            self._stderr += err
            if len(self._stderr) > _STDERR_TAIL:
                del self._stderr[:-_STDERR_TAIL]
        return out

    def _read_chunk(self, timeout: float | None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ready:
                chunk, self._ready = self._ready, b""
                return chunk
            if self._stream_ended:
                return b""

            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                readable, _ = self._connection.wait(remaining)
                if not readable:
                    return None
                data = self._connection.sock.recv(_READ_SIZE)
            except (OSError, ValueError):
                # close() from another thread shut the socket down under us.
                if self.closed:
                    return b""
                raise
            if not data:
                self._stream_ended = True
            else:
                self._ready = self._split(data)

    def _write(self, data: bytes) -> None:
        try:
            self._connection.sock.sendall(data)
        except OSError:
            msg = "the sandbox's standard input is closed: its main process exited or the stream ended"
            raise ChannelClosedError(msg) from None

    def _close_transport(self) -> None:
        self._connection.close()


class _ExecOutput:
    """Collects an exec's stdout and stderr up to a cap, and the prelude's process id."""

    def __init__(self, limit: int, *, expect_pid: bool) -> None:
        self.limit = limit
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False
        self.pid: str | None = None
        self._pid_line: bytearray | None = bytearray() if expect_pid else None
        self._decoder = FrameDecoder()

    def feed(self, data: bytes) -> None:
        out, err = self._decoder.feed(data)
        if out:
            self._keep(self.stdout, out)
        if err and self._pid_line is not None:
            err = self._take_pid(self._pid_line, err)
        if err:
            self._keep(self.stderr, err)

    def finish(self) -> None:
        if self._pid_line:
            self._keep(self.stderr, bytes(self._pid_line))
        self._pid_line = None

    def _take_pid(self, pid_line: bytearray, err: bytes) -> bytes:
        pid_line += err
        newline = pid_line.find(b"\n")
        if newline < 0 and len(pid_line) <= _PID_LINE_MAX:
            return b""
        head = bytes(pid_line[:newline]) if newline >= 0 else b""
        rest = bytes(pid_line[newline + 1 :]) if newline >= 0 else bytes(pid_line)
        self._pid_line = None
        if head.isdigit():
            self.pid = head.decode()
            return rest
        # Not the prelude's line (for example the image has no sh): keep it all.
        return head + b"\n" + rest if newline >= 0 else rest

    def _keep(self, buffer: bytearray, data: bytes) -> None:
        room = self.limit - len(buffer)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        buffer += data


def run_exec(
    api: Any,
    container_id: str,
    argv: list[str],
    *,
    env: dict[str, str],
    workdir: str | None,
    user: str | None,
    stdin: bytes | None,
    timeout: float | None,
    max_output: int,
) -> ExecResult:
    """Run ``argv`` in the container and collect its result; see `Sandbox.exec`.

    A timeout kills the command's process group inside the container through a
    second exec, so nothing keeps running after the call returns.
    """
    command = [*_PID_PRELUDE, *argv] if timeout is not None else argv
    exec_id = api.exec_create(
        container_id,
        command,
        stdout=True,
        stderr=True,
        stdin=stdin is not None,
        environment=env or None,
        workdir=workdir,
        user=user or "",
    )["Id"]
    output = _ExecOutput(max_output, expect_pid=timeout is not None)
    connection = _start_exec(api, exec_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        output.feed(connection.leftover)
        connection.sock.setblocking(False)
        finished = _pump(connection, output, stdin, deadline)
        if not finished:
            _kill_inside(api, container_id, output.pid, user)
            _pump(connection, output, None, time.monotonic() + _KILL_GRACE)
    finally:
        connection.close()
    output.finish()

    if not finished:
        return ExecResult(
            -1, bytes(output.stdout), bytes(output.stderr), timed_out=True, truncated=output.truncated
        )
    return ExecResult(
        _exit_code(api, exec_id), bytes(output.stdout), bytes(output.stderr), truncated=output.truncated
    )


def _pump(
    connection: HijackedConnection, output: _ExecOutput, stdin: bytes | None, deadline: float | None
) -> bool:
    """Feed stdin and read output until the stream ends (True) or ``deadline`` passes (False)."""
    pending = memoryview(stdin) if stdin is not None else None
    if pending is not None and not pending:
        connection.sock.shutdown(socket.SHUT_WR)
        pending = None
    while True:
        remaining = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
        readable, writable = connection.wait(remaining, write=pending is not None)

        if writable and pending is not None:
            try:
                sent = connection.sock.send(pending[:_WRITE_SIZE])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError:
                # The command exited without reading all of its input.
                sent, pending = 0, memoryview(b"")
            pending = pending[sent:]
            if not pending:
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_WR)
                pending = None

        if readable:
            try:
                data = connection.sock.recv(_READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            if not data:
                return True
            output.feed(data)


def _kill_inside(api: Any, container_id: str, pid: str | None, user: str | None) -> None:
    if pid is None:
        logger.warning(
            "exec in container %s timed out, but its process id is unknown (does the image have sh?); "
            "the command may still be running",
            container_id[:12],
            extra={"pi_sandbox.container_id": container_id},
        )
        return
    try:
        kill_id = api.exec_create(container_id, ["sh", "-c", _KILL_SCRIPT, pid], user=user or "")["Id"]
        api.exec_start(kill_id)
    except docker.errors.APIError:
        # For example the sandbox stopped meanwhile, which ended the command too.
        logger.warning(
            "could not kill the timed-out exec's process group %s in container %s",
            pid,
            container_id[:12],
            exc_info=True,
            extra={"pi_sandbox.container_id": container_id},
        )
        return
    logger.debug(
        "exec timed out; killed process group %s in container %s",
        pid,
        container_id[:12],
        extra={"pi_sandbox.container_id": container_id},
    )


def _exit_code(api: Any, exec_id: str) -> int:
    # The stream ends when the process's output closes; the engine records the
    # exit status a moment later.
    delay = 0.001
    deadline = time.monotonic() + 10.0
    while True:
        info = api.exec_inspect(exec_id)
        code = info.get("ExitCode")
        if not info.get("Running") and isinstance(code, int):
            return code
        if time.monotonic() > deadline:
            return -1
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
