"""Channel reassembles JSON lines however the bytes arrive."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from pi_sandbox import Channel, ChannelClosedError, ChannelTimeoutError, ProtocolError


class SocketChannel(Channel):
    """A Channel over one end of a real socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def _read_chunk(self, timeout: float | None) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(7919)
        except TimeoutError:
            return None

    def _write(self, data: bytes) -> None:
        self.sock.settimeout(None)
        self.sock.sendall(data)

    def _close_transport(self) -> None:
        self.sock.close()


@pytest.fixture
def pair() -> Iterator[tuple[SocketChannel, socket.socket]]:
    ours, theirs = socket.socketpair()
    channel = SocketChannel(ours)
    yield channel, theirs
    channel.close()
    theirs.close()


class TestReceive:
    def test_lines_split_across_reads(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """Messages split at arbitrary byte positions arrive whole and in order."""
        channel, peer = pair
        payload = b"".join(json.dumps({"n": i, "text": "é" * i}).encode() + b"\n" for i in range(200))

        def send_in_pieces() -> None:
            for start in range(0, len(payload), 13):
                peer.sendall(payload[start : start + 13])

        sender = threading.Thread(target=send_in_pieces)
        sender.start()
        received = [channel.receive(timeout=5) for _ in range(200)]
        sender.join()

        assert received == [{"n": i, "text": "é" * i} for i in range(200)]

    def test_line_over_one_mib(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """A 3 MiB line comes back intact."""
        channel, peer = pair
        message = {"blob": "z" * (3 * 1024 * 1024)}
        sender = threading.Thread(target=lambda: peer.sendall(json.dumps(message).encode() + b"\n"))

        sender.start()
        received = channel.receive(timeout=30)
        sender.join()

        assert received == message

    def test_timeout_keeps_partial_line(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """A timeout raises ChannelTimeoutError and the bytes read so far are kept."""
        channel, peer = pair
        peer.sendall(b'{"half":')

        with pytest.raises(ChannelTimeoutError):
            channel.receive(timeout=0.2)
        peer.sendall(b' "done"}\n')

        assert channel.receive(timeout=5) == {"half": "done"}

    def test_end_of_stream(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """A last line without newline is returned, then the channel reports its end."""
        channel, peer = pair
        peer.sendall(b'{"a":1}\n{"b":2}')
        peer.shutdown(socket.SHUT_WR)

        assert list(channel) == [{"a": 1}, {"b": 2}]
        with pytest.raises(ChannelClosedError):
            channel.receive(timeout=1)

    def test_not_json_is_protocol_error_without_content(
        self, pair: tuple[SocketChannel, socket.socket]
    ) -> None:
        """A line that is not a JSON object raises ProtocolError that does not quote the line."""
        channel, peer = pair
        peer.sendall(b"token=canary-5f3a not json\n[1, 2]\n")

        with pytest.raises(ProtocolError) as first:
            channel.receive(timeout=5)
        with pytest.raises(ProtocolError, match="expected an object"):
            channel.receive(timeout=5)

        assert "canary-5f3a" not in str(first.value)

    def test_blank_lines_skipped(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """Blank lines between messages are ignored."""
        channel, peer = pair
        peer.sendall(b'\n\n{"x":1}\n')

        assert channel.receive(timeout=5) == {"x": 1}


class TestSend:
    def test_send_encodes_one_line(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """send writes compact JSON followed by one newline."""
        channel, peer = pair

        channel.send({"type": "prompt", "message": "two\nlines"})

        assert peer.recv(1000) == b'{"type":"prompt","message":"two\\nlines"}\n'

    def test_multiline_text_rejected(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """Raw text with an inner newline would split the message, so it is rejected."""
        channel, _ = pair

        with pytest.raises(ValueError, match="single line"):
            channel.send("a\nb")

    def test_closed_channel_rejects_send(self, pair: tuple[SocketChannel, socket.socket]) -> None:
        """After close, send raises ChannelClosedError; a second close is harmless."""
        channel, _ = pair

        channel.close()
        channel.close()

        assert channel.closed
        with pytest.raises(ChannelClosedError):
            channel.send({"x": 1})
