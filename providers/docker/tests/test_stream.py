"""Exec and attach over the engine's raw streams, and the frame decoder under them."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pi_sandbox import Channel, ChannelClosedError, SandboxStatus
from pi_sandbox_docker import DockerChannel, DockerSandbox
from pi_sandbox_docker._stream import FrameDecoder


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def _send_all(channel: Channel, messages: list[dict[str, Any]]) -> None:
    # From a thread of its own: cat stops reading while its output waits to be read.
    for message in messages:
        channel.send(message)


class TestFrameDecoder:
    """Splitting the multiplexed stream, however the bytes arrive."""

    def test_every_split_point(self) -> None:
        """Feeding the stream cut at any byte gives the same stdout and stderr."""
        frames = [(1, b"hello "), (2, b"warning\n"), (1, b""), (1, b"world\n"), (3, b"engine error")]
        data = b"".join(_frame(stream, payload) for stream, payload in frames)

        for cut in range(len(data) + 1):
            decoder = FrameDecoder()
            first_out, first_err = decoder.feed(data[:cut])
            second_out, second_err = decoder.feed(data[cut:])

            assert first_out + second_out == b"hello world\n", f"cut at {cut}"
            assert first_err + second_err == b"warning\nengine error", f"cut at {cut}"

    def test_random_chunks_large_frames(self) -> None:
        """Large frames fed in random chunk sizes come out whole and in order."""
        rng = random.Random(7)  # noqa: S311 - reproducible test data
        payloads = [bytes([rng.randrange(256)]) * rng.randrange(1, 70_000) for _ in range(40)]
        data = b"".join(_frame(1 if i % 3 else 2, p) for i, p in enumerate(payloads))
        decoder = FrameDecoder()
        out, err = bytearray(), bytearray()

        position = 0
        while position < len(data):
            size = rng.choice([1, 7, 8, 9, 4096, 65_536, 300_000])
            chunk_out, chunk_err = decoder.feed(data[position : position + size])
            out += chunk_out
            err += chunk_err
            position += size

        assert bytes(out) == b"".join(p for i, p in enumerate(payloads) if i % 3)
        assert bytes(err) == b"".join(p for i, p in enumerate(payloads) if not i % 3)


@pytest.mark.integration
class TestExec:
    """Sandbox.exec on the Docker engine."""

    def test_timeout_kills_process_group_inside(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """After a timeout, neither the command nor its children are left in the container."""
        sandbox = create_sandbox()
        command = ["sh", "-c", "sleep 301 & sleep 302 & echo started; wait"]

        result = sandbox.exec(command, timeout=1.5)
        processes = sandbox.exec(["ps", "-eo", "args"]).stdout.decode()

        assert result.timed_out
        assert result.exit_code == -1
        assert result.stdout == b"started\n"
        assert result.stderr == b"", "the process id line of the timeout wrapper leaked into stderr"
        assert "sleep 301" not in processes
        assert "sleep 302" not in processes
        assert "sleep infinity" in processes

    def test_no_timeout_keeps_stderr_whole(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """With a timeout that does not expire, stderr is exactly the command's own."""
        sandbox = create_sandbox()

        result = sandbox.exec(["sh", "-c", "echo 12345 >&2; echo out"], timeout=60)

        assert result.exit_code == 0
        assert not result.timed_out
        assert result.stdout == b"out\n"
        assert result.stderr == b"12345\n"

    def test_large_stdin_and_output(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """4 MiB through cat come back unchanged while both directions flow at once."""
        sandbox = create_sandbox()
        data = random.Random(3).randbytes(4 * 1024 * 1024)  # noqa: S311 - reproducible test data

        result = sandbox.exec(["cat"], stdin=data)

        assert result.exit_code == 0
        assert result.stdout == data

    def test_output_cap_per_stream(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """Each stream is capped on its own and the command still completes."""
        sandbox = create_sandbox()

        result = sandbox.exec(
            ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' e >&2; echo done"], max_output=100
        )

        assert result.truncated
        assert result.stderr == b"e" * 100
        assert result.stdout == b"done\n"
        assert result.exit_code == 0

    def test_user_and_workdir(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """user and workdir reach the process; the default is the sandbox's user in /workspace."""
        sandbox = create_sandbox()

        default = sandbox.exec(["sh", "-c", "id -u; pwd"])
        other = sandbox.exec(["sh", "-c", "id -u; pwd"], user="1001", workdir="/tmp")

        assert default.stdout == b"1000\n/workspace\n"
        assert other.stdout == b"1001\n/tmp\n"


@pytest.mark.integration
class TestAttach:
    """Sandbox.attach channels."""

    def test_two_mib_line_round_trip(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """A 2 MiB JSON line through cat comes back whole, with the messages around it."""
        sandbox = create_sandbox(command=["cat"])
        messages = [{"n": 1}, {"blob": "y" * (2 * 1024 * 1024)}, {"n": 3}]

        with sandbox.attach() as channel:
            sender = threading.Thread(target=_send_all, args=(channel, messages))
            sender.start()
            received = [channel.receive(timeout=60) for _ in messages]
            sender.join(timeout=60)

        assert received == messages
        assert sandbox.refresh() is SandboxStatus.RUNNING

    def test_stderr_kept_apart(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """Standard error stays out of the channel, in stderr_tail and in logs()."""
        script = 'while read -r line; do echo "err:$line" >&2; echo "$line"; done'
        sandbox = create_sandbox(command=["sh", "-c", script])

        with sandbox.attach() as channel:
            assert isinstance(channel, DockerChannel)
            channel.send({"n": 1})
            channel.send({"n": 2})
            received = [channel.receive(timeout=30), channel.receive(timeout=30)]
            tail = channel.stderr_tail

        assert received == [{"n": 1}, {"n": 2}]
        assert b'err:{"n":1}' in tail
        assert 'err:{"n":2}' in sandbox.logs()

    def test_stream_end_when_process_exits(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """When the main process exits, the last line arrives and then the channel reports its end."""
        sandbox = create_sandbox(command=["sh", "-c", 'read -r line; echo "{\\"bye\\":1}"'])

        with sandbox.attach() as channel:
            channel.send({"n": 1})
            last = channel.receive(timeout=30)
            with pytest.raises(ChannelClosedError):
                channel.receive(timeout=30)

        assert last == {"bye": 1}

    def test_many_small_messages(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """Thousands of short lines arrive complete and in order."""
        sandbox = create_sandbox(command=["cat"])
        messages = [{"i": i, "text": json.dumps("x" * (i % 50))} for i in range(5000)]

        with sandbox.attach() as channel:
            sender = threading.Thread(target=_send_all, args=(channel, messages))
            sender.start()
            received = [channel.receive(timeout=60) for _ in messages]
            sender.join(timeout=60)

        assert received == messages
