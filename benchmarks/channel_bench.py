"""Attach throughput: JSON lines through `Channel` against the raw attach socket.

The container runs ``cat``, so every line sent to its standard input comes
back on its standard output. A sender thread writes the payload while the
calling thread receives and parses every line. The clock runs from the first
write to the last line parsed. The raw side reads the socket with the same
1 MiB reads as the library, splits the engine's frames and the lines by hand,
and parses each line with `json.loads`, so both sides deliver the same
parsed messages.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from docker_bench import DockerBench
from harness import INFO, LIBRARY, RAW, THROUGHPUT, Figure, alternate

__all__ = ["make_payload", "throughput"]

SMALL_LINES: Final = 20_000
SMALL_LINE_BYTES: Final = 200
LARGE_LINES: Final = 4
LARGE_LINE_BYTES: Final = 1024 * 1024
CAT: Final = ["cat"]
RECEIVE_TIMEOUT: Final = 60.0


def make_payload(small: int = SMALL_LINES, large: int = LARGE_LINES) -> list[dict[str, Any]]:
    """Return ``small`` messages of about 200 bytes with ``large`` 1 MiB ones spread evenly among them."""
    overhead = len('{"id": 00000, "data": ""}')
    filler = "x" * (SMALL_LINE_BYTES - overhead)
    big = "y" * (LARGE_LINE_BYTES - overhead)
    large_after = {(index + 1) * small // (large + 1) for index in range(large)}

    messages: list[dict[str, Any]] = []
    for index in range(small):
        messages.append({"id": len(messages), "data": filler})
        if index in large_after:
            messages.append({"id": len(messages), "data": big})
    return messages


def throughput(bench: DockerBench, rounds: int, payload: list[dict[str, Any]]) -> list[Figure]:
    """Measure the time to move ``payload`` through the attach stream, alternating sides."""
    payload_bytes = sum(len(json.dumps(message)) + 1 for message in payload)
    figures = {
        "attach_throughput": Figure(
            "attach_throughput",
            "attach: JSON lines through the stream",
            THROUGHPUT,
            "attach socket, frames and lines split by hand, json.loads",
            extra={"lines": len(payload), "bytes": payload_bytes},
        ),
        # The engine and the container do most of the work of a transfer, so
        # this process's own CPU time shows the cost of the Python side alone.
        "attach_cpu": Figure(
            "attach_cpu",
            "attach: CPU time of this process",
            INFO,
            "the same transfer",
            extra={"lines": len(payload), "bytes": payload_bytes},
        ),
    }
    cycles = {LIBRARY: lambda: _library_run(bench, payload), RAW: lambda: _raw_run(bench, payload)}
    alternate(rounds, cycles, figures, title="attach throughput")
    return list(figures.values())


def _library_run(bench: DockerBench, payload: list[dict[str, Any]]) -> dict[str, float]:
    sandbox = bench.create_library(CAT)
    try:
        with sandbox.attach() as channel:
            messages = (channel.receive(timeout=RECEIVE_TIMEOUT) for _ in payload)
            return _timed_transfer(lambda: _send_all(channel.send, payload), messages, payload)
    finally:
        bench.discard_library(sandbox)


def _raw_run(bench: DockerBench, payload: list[dict[str, Any]]) -> dict[str, float]:
    container = bench.create_raw(CAT)
    try:
        stream = bench.raw.attach(container.id)
        try:
            stream.sock.settimeout(RECEIVE_TIMEOUT)

            def send() -> None:
                for message in payload:
                    stream.send_line(json.dumps(message).encode() + b"\n")

            messages = (json.loads(line) for line in stream.lines())
            return _timed_transfer(send, messages, payload)
        finally:
            stream.close()
    finally:
        bench.discard_raw(container)


def _send_all(send: Callable[[dict[str, Any]], None], payload: list[dict[str, Any]]) -> None:
    for message in payload:
        send(message)


def _timed_transfer(
    send: Callable[[], None], messages: Iterator[dict[str, Any]], payload: list[dict[str, Any]]
) -> dict[str, float]:
    """Start ``send`` on a thread, take one message per payload entry and check them.

    Returns:
        The wall time and this process's CPU time (all threads) of the transfer.
    """
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            send()
        except BaseException as error:  # reported by the receiving thread
            errors.append(error)

    thread = threading.Thread(target=sender, name="bench-sender", daemon=True)
    started = time.perf_counter()
    cpu_started = time.process_time()
    thread.start()
    received = 0
    for expected, message in zip(payload, messages, strict=False):
        if message.get("id") != expected["id"]:
            msg = f"line {received} came back as id {message.get('id')!r}, expected {expected['id']}"
            raise RuntimeError(msg)
        received += 1
    elapsed = time.perf_counter() - started
    thread.join(timeout=RECEIVE_TIMEOUT)
    cpu = time.process_time() - cpu_started

    if errors:
        raise errors[0]
    if received != len(payload):
        msg = f"received {received} of {len(payload)} lines before the stream ended"
        raise RuntimeError(msg)
    return {"attach_throughput": elapsed, "attach_cpu": cpu}
