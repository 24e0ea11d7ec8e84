"""The raw counterpart: the same container work written by hand with docker-py.

This is what a careful engineer would write without pi-sandbox to run one
session's container. It writes the secret files and the manifest into a
folder that only the sandbox's user can read, and bind-mounts that folder
read-only at ``/run/secrets`` next to the workspace and agent folders. It
creates the container with the same labels, limits and hardening as the
Docker provider, starts it and polls ``inspect`` until it runs. It skips what
the library adds on top: the name and image checks, the folder lock, the atomic rename of the
folder, waiting for the entrypoint to hand over to the command, and the
translation of errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import docker
import docker.types

__all__ = ["RawContainer", "RawDocker", "RawStream"]

# The provider's label keys, so that both sides send the engine the same amount of data.
_PREFIX: Final = "dev.pi-sandbox."
# The Docker provider's SMALL tier and default hardening.
MEMORY: Final = "1024m"
NANO_CPUS: Final = 1_000_000_000
PIDS: Final = 256
USER: Final = "1000:1000"
SECRETS_GID: Final = 47000
_READ_SIZE: Final = 1024 * 1024
_POLL_SECONDS: Final = 0.005
_START_TIMEOUT: Final = 60.0


@attrs.frozen
class RawContainer:
    """One container made by `RawDocker`, with the host folders it mounts."""

    id: str
    session_id: str
    secrets_dir: Path
    workspace: Path
    agent_dir: Path


class RawDocker:
    """Creates, controls and removes session containers with docker-py calls only.

    Args:
        client: The low-level engine client, shared by every thread.
        image: The image to run.
        secrets_root: A private folder (mode 0700) for the secrets folders.
        state_dir: A folder for the workspace and agent folders.
        labels: Labels added to every container.
        owner: The owner label value, kept apart from the library's.
    """

    def __init__(
        self,
        client: docker.APIClient,
        image: str,
        *,
        secrets_root: Path,
        state_dir: Path,
        labels: Mapping[str, str],
        owner: str,
    ) -> None:
        self.client = client
        self.image = image
        # Looked up once: a hand-written script has no reason to ask again per container.
        self.image_id = client.inspect_image(image)["Id"]
        self.secrets_root = secrets_root
        self.state_dir = state_dir
        self.labels = dict(labels)
        self.owner = owner

    def create(self, session_id: str, command: list[str], secrets: Mapping[str, bytes]) -> RawContainer:
        """Write the folders, create and start the container, and poll until it runs."""
        secrets_dir = self._write_secrets(session_id, secrets)
        workspace = self.state_dir / "workspaces" / session_id
        agent_dir = self.state_dir / "agent" / session_id
        for folder in (workspace, agent_dir):
            folder.mkdir(mode=0o750, parents=True)
            os.chown(folder, 1000, 1000)

        mounts = [
            docker.types.Mount("/workspace", str(workspace), type="bind"),
            docker.types.Mount("/data/agent", str(agent_dir), type="bind"),
            docker.types.Mount("/run/secrets", str(secrets_dir), type="bind", read_only=True),
        ]
        host_config = self.client.create_host_config(
            mounts=mounts,
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            pids_limit=PIDS,
            mem_limit=MEMORY,
            memswap_limit=MEMORY,
            nano_cpus=NANO_CPUS,
            init=True,
        )
        labels = {
            **self.labels,
            f"{_PREFIX}managed": "1",
            f"{_PREFIX}provider": "docker",
            f"{_PREFIX}session-id": session_id,
            f"{_PREFIX}owner": self.owner,
            f"{_PREFIX}spec-hash": hashlib.sha256(json.dumps(command).encode()).hexdigest(),
            f"{_PREFIX}image-id": self.image_id,
            f"{_PREFIX}default-dirs": "workspace,agent_dir",
            f"{_PREFIX}secrets-access": f"owner:1000:{SECRETS_GID}",
        }
        created = self.client.create_container(
            image=self.image,
            command=command,
            name=f"pi-raw-{session_id}",
            user=USER,
            environment={
                "PI_SESSION_ID": session_id,
                "PI_SECRETS_DIR": "/run/secrets",
                "PI_CODING_AGENT_DIR": "/data/agent",
            },
            labels=labels,
            working_dir="/workspace",
            stdin_open=True,
            detach=True,
            tty=False,
            host_config=host_config,
            use_config_proxy=False,
        )
        container = RawContainer(created["Id"], session_id, secrets_dir, workspace, agent_dir)
        self.client.start(container.id)
        self._wait_running(container.id)
        return container

    def _write_secrets(self, session_id: str, secrets: Mapping[str, bytes]) -> Path:
        folder = self.secrets_root / session_id
        folder.mkdir(mode=0o700)
        manifest = []
        for index, (env_name, value) in enumerate(secrets.items()):
            _write_private(folder / f"s-{index}", value)
            manifest.append(f"{env_name}\ts-{index}\n")
        _write_private(folder / "manifest", "".join(manifest).encode())
        os.chown(folder, 1000, SECRETS_GID)
        return folder

    def _wait_running(self, container_id: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            state = self.client.inspect_container(container_id)["State"]
            if state["Running"]:
                return
            if state["Status"] in {"exited", "dead"} or time.monotonic() > deadline:
                msg = (
                    f"container {container_id[:12]} did not start: "
                    f"{state['Status']}, exit status {state['ExitCode']}"
                )
                raise RuntimeError(msg)
            time.sleep(_POLL_SECONDS)

    def exec(self, container_id: str, argv: list[str]) -> tuple[int, bytes]:
        """Run ``argv`` in the container; return its exit status and standard output."""
        exec_id = self.client.exec_create(container_id, argv, stdout=True, stderr=True)["Id"]
        stdout, _stderr = self.client.exec_start(exec_id, demux=True)
        # The engine records the exit status a moment after the output ends.
        while True:
            info = self.client.exec_inspect(exec_id)
            if not info["Running"] and info["ExitCode"] is not None:
                return int(info["ExitCode"]), stdout or b""
            time.sleep(0.001)

    def pause_resume(self, container_id: str) -> None:
        """Pause the container, then unpause it."""
        self.client.pause(container_id)
        self.client.unpause(container_id)

    def terminate(self, container: RawContainer, *, timeout: int = 10) -> None:
        """Stop the container with a grace period, remove it, and delete its secrets folder."""
        self.client.stop(container.id, timeout=timeout)
        self.client.remove_container(container.id, v=True, force=True)
        shutil.rmtree(container.secrets_dir)

    def remove_data(self, container: RawContainer) -> None:
        """Delete the container's workspace and agent folders."""
        shutil.rmtree(container.workspace, ignore_errors=True)
        shutil.rmtree(container.agent_dir, ignore_errors=True)

    def attach(self, container_id: str) -> RawStream:
        """Attach to the container's standard input, output and error."""
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        return RawStream(self.client.attach_socket(container_id, params=params))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchown(fd, 1000, SECRETS_GID)
    finally:
        os.close(fd)


class RawStream:
    """An attach socket read by hand: the engine's 8-byte frame headers, then lines.

    Each frame is a header (stream number, three zero bytes, 32-bit big-endian
    length) and that many payload bytes; standard output is stream 1.
    """

    def __init__(self, socket_io: Any) -> None:
        self._socket_io = socket_io
        # docker-py returns a SocketIO wrapper; writes go to the socket under it.
        self.sock: socket.socket = socket_io._sock
        self._data = bytearray()
        self._line = bytearray()

    def send_line(self, line: bytes) -> None:
        """Write one line to the container's standard input."""
        self.sock.sendall(line)

    def lines(self) -> Iterator[bytes]:
        """Yield standard output lines, without the newline, until the stream ends."""
        while True:
            chunk = self.sock.recv(_READ_SIZE)
            if not chunk:
                return
            self._data += chunk
            yield from self._lines_in_frames()

    def _lines_in_frames(self) -> Iterator[bytes]:
        data = self._data
        while len(data) >= 8:
            length = int.from_bytes(data[4:8], "big")
            if len(data) < 8 + length:
                # The rest of the frame has not arrived: pass on what has, keep its header.
                if data[0] == 1 and len(data) > 8:
                    yield from self._split(bytes(data[8:]))
                    data[4:8] = (length - (len(data) - 8)).to_bytes(4, "big")
                    del data[8:]
                return
            stream = data[0]
            payload = bytes(data[8 : 8 + length])
            del data[: 8 + length]
            if stream == 1:
                yield from self._split(payload)

    def _split(self, payload: bytes) -> Iterator[bytes]:
        start = 0
        while True:
            end = payload.find(b"\n", start)
            if end < 0:
                self._line += payload[start:]
                return
            if self._line:
                self._line += payload[start:end]
                yield bytes(self._line)
                self._line.clear()
            else:
                yield payload[start:end]
            start = end + 1

    def close(self) -> None:
        """Close the socket and the HTTP response under it."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._socket_io.close()
