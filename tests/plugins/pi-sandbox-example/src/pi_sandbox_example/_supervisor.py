"""The process that owns one sandbox's main process and serves its attach socket.

Run as ``python -m pi_sandbox_example._supervisor SANDBOX_DIR``. It starts the
command from ``meta.json`` in its own process group, copies bytes between the
attached client and the process (buffering both ways, so neither side can stall
the other), writes stderr and unattached stdout to ``output.log``, and records
the exit status when the process ends.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path

_CHUNK = 256 * 1024


class _Relay:
    """Copies bytes between one attached socket client and the child's pipes."""

    def __init__(self, directory: Path, child: subprocess.Popen[bytes]) -> None:
        assert child.stdin is not None
        assert child.stdout is not None
        self.log = (directory / "output.log").open("ab")
        self.to_child = child.stdin.fileno()
        self.from_child = child.stdout.fileno()
        os.set_blocking(self.to_child, False)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(directory / "attach.sock"))
        self.server.listen(1)
        self.server.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server, selectors.EVENT_READ)
        self.selector.register(self.from_child, selectors.EVENT_READ)
        self.client: socket.socket | None = None
        self.pending_to_child = bytearray()
        self.pending_to_client = bytearray()

    def _watch(self, target: int | socket.socket, read: bool, pending: bytearray) -> None:
        events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if pending else 0)
        try:
            if events:
                self.selector.modify(target, events)
            else:
                self.selector.unregister(target)
        except KeyError:
            if events:
                self.selector.register(target, events)

    def _drop_client(self) -> None:
        if self.client is not None:
            self.selector.unregister(self.client)
            self.client.close()
            self.client = None

    def _accept(self) -> None:
        self._drop_client()
        self.client, _ = self.server.accept()
        self.client.setblocking(False)
        self.pending_to_client.clear()
        self.selector.register(self.client, selectors.EVENT_READ)

    def _client_ready(self, mask: int) -> None:
        assert self.client is not None
        if mask & selectors.EVENT_READ:
            data = self.client.recv(_CHUNK)
            if not data:
                self._drop_client()
                return
            self.pending_to_child += data
            self._watch(self.to_child, False, self.pending_to_child)
        if mask & selectors.EVENT_WRITE and self.pending_to_client:
            sent = self.client.send(self.pending_to_client)
            del self.pending_to_client[:sent]
            self._watch(self.client, True, self.pending_to_client)

    def _child_writable(self) -> None:
        try:
            written = os.write(self.to_child, self.pending_to_child)
        except BrokenPipeError:
            written = len(self.pending_to_child)
        del self.pending_to_child[:written]
        self._watch(self.to_child, False, self.pending_to_child)

    def _child_readable(self) -> bool:
        data = os.read(self.from_child, _CHUNK)
        if not data:
            return False
        if self.client is None:
            self.log.write(data)
            self.log.flush()
        else:
            self.pending_to_client += data
            self._watch(self.client, True, self.pending_to_client)
        return True

    def run(self) -> None:
        """Relay until the child closes its standard output."""
        while True:
            for key, mask in self.selector.select():
                if key.fileobj is self.server:
                    self._accept()
                elif self.client is not None and key.fileobj is self.client:
                    self._client_ready(mask)
                elif key.fileobj == self.to_child:
                    self._child_writable()
                elif key.fileobj == self.from_child and not self._child_readable():
                    self._flush_client()
                    return

    def _flush_client(self) -> None:
        if self.client is not None and self.pending_to_client:
            self.client.setblocking(True)
            self.client.sendall(self.pending_to_client)


def _serve(directory: Path) -> int:
    meta = json.loads((directory / "meta.json").read_text())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **meta["env"]}
    with (directory / "output.log").open("ab") as stderr:
        child = subprocess.Popen(
            meta["command"],
            cwd=meta["workspace"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            process_group=0,
        )
    (directory / "child.pid").write_text(str(child.pid))

    _Relay(directory, child).run()

    status = child.wait()
    (directory / "exit_status").write_text(str(status))
    (directory / "attach.sock").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(Path(sys.argv[1])))
