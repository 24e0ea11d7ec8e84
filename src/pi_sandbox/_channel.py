"""The JSON-lines stream to pi's RPC mode."""

from __future__ import annotations

import abc
import json
import threading
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from ._errors import ChannelClosedError, ChannelTimeoutError, ProtocolError

__all__ = ["Channel"]

_COMPACT_AFTER = 64 * 1024
# One shared encoder: json.dumps with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class Channel(abc.ABC):
    """A JSON-lines stream to the sandbox's main process (``pi --mode rpc``).

    `send` writes one JSON object as one line; `receive` returns the next complete
    line as a parsed object, however the bytes were split in transit, and however
    long the line is. Sending and receiving may happen on two threads at once.
    Closing the channel leaves the sandbox running.

    Providers subclass it and implement `_read_chunk`, `_write` and `_close_transport`.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0
        self._scan_from = 0
        self._eof = False
        self._closed = False
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @abc.abstractmethod
    def _read_chunk(self, timeout: float | None) -> bytes | None:
        """Return the next bytes of the stream, b"" at its end, or None when ``timeout`` expired."""

    @abc.abstractmethod
    def _write(self, data: bytes) -> None:
        """Write all of ``data`` to the stream."""

    @abc.abstractmethod
    def _close_transport(self) -> None:
        """Release the transport without stopping the sandbox."""

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def send(self, message: Mapping[str, Any] | str | bytes) -> None:
        """Send one message: a mapping is encoded as JSON, text and bytes are sent as one line.

        Raises:
            ChannelClosedError: The channel or the stream is closed.
            ValueError: ``message`` as text spans more than one line.
        """
        if isinstance(message, Mapping):
            # Compact JSON never contains a raw newline, so no check is needed.
            data = (_ENCODER.encode(message) + "\n").encode()
        else:
            raw = message.encode() if isinstance(message, str) else bytes(message)
            raw = raw.removesuffix(b"\n")
            if b"\n" in raw:
                msg = "a message must be a single line; JSON-encode text that contains newlines"
                raise ValueError(msg)
            data = raw + b"\n"
        if self._closed:
            msg = "the channel is closed"
            raise ChannelClosedError(msg)

        with self._write_lock:
            self._write(data)

    def receive_line(self, timeout: float | None = None) -> bytes:
        """Return the next line without its newline, waiting at most ``timeout`` seconds.

        Raises:
            ChannelTimeoutError: No complete line arrived in time; partial bytes are kept.
            ChannelClosedError: The stream ended before another complete line.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._read_lock:
            while True:
                line = self._take_line()
                if line is not None:
                    return line

                if self._eof or self._closed:
                    if self._start < len(self._buffer) and self._eof:
                        # A last line without a newline is still a line.
                        with memoryview(self._buffer) as view:
                            line = bytes(view[self._start :])
                        self._buffer.clear()
                        self._start = self._scan_from = 0
                        return line
                    msg = "the channel's stream has ended" if self._eof else "the channel is closed"
                    raise ChannelClosedError(msg)

                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    msg = f"no complete message within {timeout} seconds"
                    raise ChannelTimeoutError(msg)
                chunk = self._read_chunk(remaining)
                if chunk is None:
                    continue
                if not chunk:
                    self._eof = True
                    continue
                self._buffer += chunk

    def _take_line(self) -> bytes | None:
        # Lines are sliced off by moving a start offset. The consumed prefix is
        # dropped only once it is large, so many short lines in one chunk cost
        # linear time rather than one buffer shift each.
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            return None
        with memoryview(self._buffer) as view:
            line = bytes(view[self._start : end])
        self._start = self._scan_from = end + 1
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = self._scan_from = 0
        elif self._start >= _COMPACT_AFTER and self._start * 2 >= len(self._buffer):
            del self._buffer[: self._start]
            self._start = self._scan_from = 0
        return line

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """Return the next message as a parsed JSON object, skipping blank lines.

        Raises:
            ChannelTimeoutError: No complete message arrived in time.
            ChannelClosedError: The stream ended.
            ProtocolError: The line is not a JSON object (its content is not quoted,
                because the sandbox's output may carry anything).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            line = self.receive_line(remaining)
            if line.strip():
                break
        try:
            value = json.loads(line)
        except ValueError:
            msg = f"received a line of {len(line)} bytes that is not JSON"
            raise ProtocolError(msg) from None
        if not isinstance(value, dict):
            msg = f"received JSON of type {type(value).__name__}, expected an object"
            raise ProtocolError(msg)
        return value

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield messages until the stream ends."""
        while True:
            try:
                yield self.receive()
            except ChannelClosedError:
                return

    def close(self) -> None:
        """Close the channel; the sandbox keeps running. Calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._close_transport()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
