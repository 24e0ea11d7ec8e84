"""Cold-path figures of the Docker provider against hand-written docker-py calls.

One lifecycle cycle gives several figures. The clock starts before create.
The create-to-running figure is read when create returns, and the
create-to-first-exec figure when ``echo ready`` returns. The exec round
trips, the pause plus resume, and the terminate are then timed one by one.
The RPC cycle runs pi itself, and the concurrent cycle creates 20 sandboxes
at once.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Final

import docker.errors
from harness import COLD, CONCURRENT, FAILURES_SUFFIX, LIBRARY, RAW, Figure, alternate
from raw_docker import RawContainer, RawDocker

from pi_sandbox import Channel, Sandbox, SecretMaterial, SessionSpec
from pi_sandbox_docker import DockerProvider

__all__ = ["DockerBench"]

logger = logging.getLogger("pi_sandbox.bench")

SLEEP: Final = ["sleep", "infinity"]
ECHO: Final = ["echo", "ready"]
PI_RPC: Final = ["pi", "--mode", "rpc"]
EXEC_ROUND_TRIPS: Final = 3
# Seconds the processes get between the stop signal and the kill.
STOP_GRACE: Final = 10
RPC_TIMEOUT: Final = 60.0
RPC_REQUEST: Final = {"id": "bench-state", "type": "get_state"}


class DockerBench:
    """Runs the Docker figures with one provider and one raw client.

    Args:
        provider: The library side, configured with the benchmark labels.
        raw: The raw side, with the same image and labels.
        secrets: The secrets each sandbox receives, by environment variable.
    """

    def __init__(self, provider: DockerProvider, raw: RawDocker, secrets: Mapping[str, bytes]) -> None:
        self.provider = provider
        self.raw = raw
        self.secrets = dict(secrets)
        self.material = SecretMaterial(self.secrets)
        self._ids = itertools.count()

    def session_id(self) -> str:
        """Return a session id unused in this run."""
        return f"bench-{os.getpid()}-{next(self._ids)}"

    # The library side.

    def create_library(self, command: list[str]) -> Sandbox:
        """Create a sandbox through the provider, with network "none"."""
        spec = SessionSpec(session_id=self.session_id(), command=command, network="none")
        return self.provider.create(spec, self.material)

    def discard_library(self, sandbox: Sandbox, *, grace: int = 0) -> None:
        """Terminate a sandbox if needed and delete its folders, untimed."""
        try:
            sandbox.terminate(remove_data=True, timeout=grace)
        except Exception:
            logger.warning("could not terminate sandbox %s", sandbox.session_id, exc_info=True)

    # The raw side.

    def create_raw(self, command: list[str]) -> RawContainer:
        """Create a container by hand, with network "none"."""
        return self.raw.create(self.session_id(), command, self.secrets)

    def discard_raw(self, container: RawContainer, *, grace: int = 0) -> None:
        """Remove a raw container and its folders, untimed."""
        client = self.raw.client
        try:
            client.stop(container.id, timeout=grace)
            client.remove_container(container.id, v=True, force=True)
        except docker.errors.NotFound:
            pass  # the timed terminate removed it already
        except Exception:
            logger.warning("could not remove container %s", container.id[:12], exc_info=True)
        shutil.rmtree(container.secrets_dir, ignore_errors=True)
        self.raw.remove_data(container)

    # Lifecycle: create to running, to first exec, exec, pause plus resume, terminate.

    def lifecycle(self, rounds: int) -> list[Figure]:
        """Measure the lifecycle figures over ``rounds`` alternating rounds."""
        figures = {
            "create_to_running": Figure(
                "create_to_running",
                "create to running",
                COLD,
                "write secrets, create, start, poll inspect",
            ),
            "create_to_exec": Figure(
                "create_to_exec",
                "create to first exec",
                COLD,
                "the above, then exec_create, exec_start, exec_inspect",
            ),
            "exec_round_trip": Figure(
                "exec_round_trip", "exec round trip", COLD, "exec_create, exec_start, exec_inspect"
            ),
            "pause_resume": Figure("pause_resume", "pause plus resume", COLD, "pause, unpause"),
            "terminate": Figure(
                "terminate", "terminate", COLD, "stop (10 s grace), remove, delete secrets folder"
            ),
        }
        cycles = {LIBRARY: self._library_lifecycle, RAW: self._raw_lifecycle}
        alternate(rounds, cycles, figures, title="lifecycle")
        return list(figures.values())

    def _library_lifecycle(self) -> dict[str, Any]:
        samples: dict[str, Any] = {}
        started = time.perf_counter()
        sandbox = self.create_library(SLEEP)
        samples["create_to_running"] = time.perf_counter() - started
        try:
            result = sandbox.exec(ECHO)
            samples["create_to_exec"] = time.perf_counter() - started
            _check_echo(result.exit_code, result.stdout)

            samples["exec_round_trip"] = []
            for _ in range(EXEC_ROUND_TRIPS):
                begin = time.perf_counter()
                result = sandbox.exec(ECHO)
                samples["exec_round_trip"].append(time.perf_counter() - begin)
                _check_echo(result.exit_code, result.stdout)

            begin = time.perf_counter()
            sandbox.pause()
            sandbox.resume()
            samples["pause_resume"] = time.perf_counter() - begin

            begin = time.perf_counter()
            sandbox.terminate(timeout=STOP_GRACE)
            samples["terminate"] = time.perf_counter() - begin
        finally:
            self.discard_library(sandbox)
        return samples

    def _raw_lifecycle(self) -> dict[str, Any]:
        samples: dict[str, Any] = {}
        raw = self.raw
        started = time.perf_counter()
        container = self.create_raw(SLEEP)
        samples["create_to_running"] = time.perf_counter() - started
        try:
            exit_code, stdout = raw.exec(container.id, ECHO)
            samples["create_to_exec"] = time.perf_counter() - started
            _check_echo(exit_code, stdout)

            samples["exec_round_trip"] = []
            for _ in range(EXEC_ROUND_TRIPS):
                begin = time.perf_counter()
                exit_code, stdout = raw.exec(container.id, ECHO)
                samples["exec_round_trip"].append(time.perf_counter() - begin)
                _check_echo(exit_code, stdout)

            begin = time.perf_counter()
            raw.pause_resume(container.id)
            samples["pause_resume"] = time.perf_counter() - begin

            begin = time.perf_counter()
            raw.terminate(container, timeout=STOP_GRACE)
            samples["terminate"] = time.perf_counter() - begin
        finally:
            self.discard_raw(container)
        return samples

    # pi's first RPC response.

    def rpc(self, rounds: int) -> list[Figure]:
        """Measure create to pi's response to ``get_state``, with the image's real pi."""
        figures = {
            "create_to_rpc": Figure(
                "create_to_rpc",
                "create to pi's first RPC response",
                COLD,
                "create as above, attach socket, write the line, read frames to the response",
            )
        }
        cycles = {LIBRARY: self._library_rpc, RAW: self._raw_rpc}
        alternate(rounds, cycles, figures, title="rpc")
        return list(figures.values())

    def _library_rpc(self) -> dict[str, float]:
        started = time.perf_counter()
        sandbox = self.create_library(PI_RPC)
        try:
            with sandbox.attach() as channel:
                channel.send(RPC_REQUEST)
                response = _library_response(channel)
                elapsed = time.perf_counter() - started
        finally:
            self.discard_library(sandbox, grace=1)
        _check_state(response)
        return {"create_to_rpc": elapsed}

    def _raw_rpc(self) -> dict[str, float]:
        started = time.perf_counter()
        container = self.create_raw(PI_RPC)
        try:
            stream = self.raw.attach(container.id)
            try:
                stream.sock.settimeout(RPC_TIMEOUT)
                stream.send_line(json.dumps(RPC_REQUEST).encode() + b"\n")
                response = None
                for line in stream.lines():
                    message = json.loads(line) if line.strip() else None
                    if isinstance(message, dict) and _is_state_response(message):
                        response = message
                        break
                elapsed = time.perf_counter() - started
            finally:
                stream.close()
        finally:
            self.discard_raw(container, grace=1)
        if response is None:
            msg = "pi's output ended before its response to get_state"
            raise RuntimeError(msg)
        _check_state(response)
        return {"create_to_rpc": elapsed}

    # Concurrent creates.

    def concurrent(self, rounds: int, count: int = 20) -> list[Figure]:
        """Measure the wall time of ``count`` creates started at once, and their failures."""
        figure = Figure(
            "concurrent_create",
            f"{count} concurrent creates (wall)",
            CONCURRENT,
            f"{count} threads, each creating by hand as above",
            extra={"sandboxes": count},
        )
        cycles = {
            LIBRARY: lambda: self._concurrent(
                count, self.create_library, self.discard_library, figure, LIBRARY
            ),
            RAW: lambda: self._concurrent(count, self.create_raw, self.discard_raw, figure, RAW),
        }
        alternate(rounds, cycles, {figure.key: figure}, title="concurrent")
        return [figure]

    def _concurrent(
        self,
        count: int,
        create: Callable[[list[str]], Any],
        discard: Callable[[Any], None],
        figure: Figure,
        side: str,
    ) -> dict[str, float | int]:
        with ThreadPoolExecutor(max_workers=count) as pool:
            started = time.perf_counter()
            futures = [pool.submit(create, SLEEP) for _ in range(count)]
            wait(futures)
            elapsed = time.perf_counter() - started

            made = [future.result() for future in futures if future.exception() is None]
            failed = [future.exception() for future in futures if future.exception() is not None]
            for error in failed:
                logger.warning("a concurrent %s create failed: %s", side, error)
            wait([pool.submit(discard, item) for item in made])
        # Failed creates are counted rather than raised, so that the wall time is kept.
        return {figure.key: elapsed, f"{figure.key}{FAILURES_SUFFIX}": len(failed)}


def _check_echo(exit_code: int, stdout: bytes) -> None:
    if exit_code != 0 or stdout != b"ready\n":
        msg = f"echo ready returned exit status {exit_code} and {stdout[:100]!r}"
        raise RuntimeError(msg)


def _is_state_response(message: Mapping[str, Any]) -> bool:
    return message.get("type") == "response" and message.get("id") == RPC_REQUEST["id"]


def _library_response(channel: Channel) -> dict[str, Any]:
    deadline = time.monotonic() + RPC_TIMEOUT
    while True:
        message = channel.receive(timeout=max(0.0, deadline - time.monotonic()))
        if _is_state_response(message):
            return message


def _check_state(response: Mapping[str, Any]) -> None:
    if response.get("success") is not True:
        msg = f"pi's response to get_state reports no success: {str(response)[:200]}"
        raise RuntimeError(msg)
