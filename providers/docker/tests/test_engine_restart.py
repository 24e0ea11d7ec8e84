"""Sandboxes across a restart of the Docker engine.

This test stops dockerd and starts it again with the same arguments,
environment and working folder, so it disturbs everything else on the
machine. It carries the ``engine_restart`` marker and runs only when
``PI_SANDBOX_TEST_ENGINE_RESTART=1`` (CI sets it), and needs root and a local
dockerd with a pid file.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from pi_sandbox import Sandbox, SandboxStatus, SecretMaterial
from pi_sandbox._spec import DEFAULT_COMMAND
from pi_sandbox.testing import contract_canary
from pi_sandbox_docker import DockerProvider, DockerSandbox

pytestmark = [pytest.mark.integration, pytest.mark.engine_restart]

PID_FILE = Path("/var/run/docker.pid")
ENGINE_TIMEOUT = 120.0


def _pi_state(sandbox: Sandbox) -> dict[str, Any]:
    with sandbox.attach() as channel:
        channel.send({"type": "get_state", "id": "restart-check"})
        while True:
            message = channel.receive(timeout=60)
            if message.get("id") == "restart-check":
                return message


def _restart_engine() -> None:
    """Stop dockerd with SIGTERM and start it again exactly as it was started."""
    if os.geteuid() != 0 or not PID_FILE.exists():
        pytest.skip("restarting the engine needs root and a local dockerd with /var/run/docker.pid")
    pid = int(PID_FILE.read_text().strip())
    proc = Path(f"/proc/{pid}")
    argv = [os.fsdecode(arg) for arg in (proc / "cmdline").read_bytes().split(b"\0") if arg]
    environment = dict(
        os.fsdecode(item).split("=", 1)
        for item in (proc / "environ").read_bytes().split(b"\0")
        if b"=" in item
    )
    cwd = os.readlink(proc / "cwd")
    log = os.readlink(proc / "fd" / "1")
    log_target = log if os.path.exists(log) and stat.S_ISREG(os.stat(log).st_mode) else os.devnull

    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while proc.exists() and (proc / "cmdline").read_bytes():
        assert time.monotonic() < deadline, "dockerd did not exit after SIGTERM"
        time.sleep(0.2)

    with open(log_target, "ab") as output:
        subprocess.Popen(
            argv,
            env=environment,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while not _engine_answers():
        assert time.monotonic() < deadline, "dockerd did not answer after the restart"
        time.sleep(0.5)


def _engine_answers() -> bool:
    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except docker.errors.DockerException:
        return False
    finally:
        client.close()


class TestEngineRestart:
    """What survives an engine restart, and how a host gets its sandboxes back."""

    def test_fresh_provider_resumes_after_restart(
        self,
        create_sandbox: Callable[..., DockerSandbox],
        provider_factory: Callable[[], DockerProvider],
        engine: docker.DockerClient,
    ) -> None:
        """A new provider finds a running and a paused sandbox, resumes them, and pi responds again."""
        secrets = SecretMaterial({"PI_RESTART_KEY": contract_canary()})
        running = create_sandbox(secrets, command=list(DEFAULT_COMMAND))
        paused = create_sandbox(secrets, command=list(DEFAULT_COMMAND))
        assert _pi_state(running)["success"] is True
        assert _pi_state(paused)["success"] is True
        paused.pause()
        live_restore = bool(engine.info().get("LiveRestoreEnabled"))

        _restart_engine()
        provider = provider_factory()
        try:
            found_running = provider.find(running.session_id)
            found_paused = provider.find(paused.session_id)
            assert found_running is not None
            assert found_paused is not None
            statuses = (found_running.status, found_paused.status)
            found_paused.resume(secrets)
            found_running.resume(secrets)
            answers = [_pi_state(found_paused), _pi_state(found_running)]
            environment = found_paused.exec(
                ["sh", "-c", 'for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" < "$f"; done 2>/dev/null']
            )
        finally:
            provider.close()

        if live_restore:
            assert statuses == (SandboxStatus.RUNNING, SandboxStatus.PAUSED)
        else:
            assert statuses == (SandboxStatus.STOPPED, SandboxStatus.STOPPED)
        assert found_paused.refresh() is SandboxStatus.RUNNING
        assert found_running.refresh() is SandboxStatus.RUNNING
        assert [answer["success"] for answer in answers] == [True, True]
        assert b"PI_RESTART_KEY=" in environment.stdout
