"""The example provider: one supervised local process group per session."""

from __future__ import annotations

import contextlib
import json
import os
import secrets as random_tokens
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from pi_sandbox import (
    Capabilities,
    Channel,
    CleanupReport,
    ExecResult,
    InvalidSpecError,
    ProviderCheck,
    Sandbox,
    SandboxExistsError,
    SandboxFailedError,
    SandboxInfo,
    SandboxNotFoundError,
    SandboxProvider,
    SandboxStateError,
    SandboxStatus,
    SecretMaterial,
    SessionSpec,
)

_START_TIMEOUT = 10.0


class _SocketChannel(Channel):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.connect(str(path))

    def _read_chunk(self, timeout: float | None) -> bytes | None:
        self._socket.settimeout(timeout)
        try:
            return self._socket.recv(256 * 1024)
        except TimeoutError:
            return None

    def _write(self, data: bytes) -> None:
        self._socket.settimeout(None)
        self._socket.sendall(data)

    def _close_transport(self) -> None:
        self._socket.close()


def _write_secrets(directory: Path, secrets: SecretMaterial) -> None:
    # Write into a fresh folder and swap it in, so a reader never sees half a set.
    staging = Path(tempfile.mkdtemp(prefix=".secrets-", dir=directory.parent))
    manifest = []
    for index, (name, value) in enumerate(secrets.items()):
        path = staging / f"s-{index}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(descriptor, "wb") as file:
            file.write(value.reveal())
        manifest.append(f"{name}\ts-{index}\n")
    (staging / "manifest").write_text("".join(manifest))
    old = directory.with_name(f".old-{random_tokens.token_hex(4)}")
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class ProcessSandbox(Sandbox):
    """A session running as a local process group under a supervisor."""

    def __init__(self, provider: ProcessProvider, directory: Path) -> None:
        meta = json.loads((directory / "meta.json").read_text())
        super().__init__(provider, meta["session_id"], meta["provider_id"])
        self._directory = directory
        self._meta = meta
        self.workspace = Path(meta["workspace"])
        self._status = self._do_refresh()

    def _pid(self, name: str) -> int | None:
        try:
            return int((self._directory / name).read_text())
        except (OSError, ValueError):
            return None

    def _do_refresh(self) -> SandboxStatus:
        if not (self._directory / "meta.json").exists():
            return SandboxStatus.REMOVED
        child = self._pid("child.pid")
        if child is None:
            return SandboxStatus.CREATING
        if (self._directory / "exit_status").exists() or not _alive(child):
            return SandboxStatus.STOPPED
        return SandboxStatus.PAUSED if _process_state(child) == "T" else SandboxStatus.RUNNING

    def _signal_group(self, signum: int) -> None:
        child = self._pid("child.pid")
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signum)

    def _do_pause(self) -> None:
        if self._do_refresh() is not SandboxStatus.RUNNING:
            msg = f"sandbox for session {self.session_id!r} is not running"
            raise SandboxStateError(msg)
        self._signal_group(signal.SIGSTOP)
        # Signals are delivered asynchronously; return once the stop took effect.
        deadline = time.monotonic() + _START_TIMEOUT
        while self._do_refresh() is not SandboxStatus.PAUSED and time.monotonic() < deadline:
            time.sleep(0.005)

    def _do_resume(self, secrets: SecretMaterial | None) -> None:
        if secrets is not None:
            _write_secrets(self._directory / "secrets", secrets)
        status = self._do_refresh()
        if status is SandboxStatus.PAUSED:
            self._signal_group(signal.SIGCONT)
        elif status is SandboxStatus.STOPPED:
            self._provider_start()

    def _provider_start(self) -> None:
        provider = self._provider
        assert isinstance(provider, ProcessProvider)
        provider.start_supervisor(self._directory)

    def _do_stop(self, timeout: float) -> None:
        self._signal_group(signal.SIGCONT)
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._do_refresh() is not SandboxStatus.STOPPED and time.monotonic() < deadline:
            time.sleep(0.02)
        self._signal_group(signal.SIGKILL)
        while not (self._directory / "exit_status").exists() and time.monotonic() < deadline + 5:
            time.sleep(0.02)

    def _do_terminate(self, *, remove_data: bool, timeout: float) -> None:
        if not self._directory.exists():
            return
        self._do_stop(timeout)
        if remove_data and self._meta["workspace_owned"]:
            shutil.rmtree(self._meta["workspace"], ignore_errors=True)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _do_exec(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        workdir: str | None,
        timeout: float | None,
        stdin: bytes | None,
        user: str | None,
        max_output: int,
    ) -> ExecResult:
        status = self._do_refresh()
        if status is not SandboxStatus.RUNNING:
            msg = f"cannot exec in sandbox for session {self.session_id!r}: it is {status.value}"
            raise SandboxStateError(msg)
        process = subprocess.Popen(
            argv,
            cwd=workdir or self._meta["workspace"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self._meta["env"], **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        timed_out = False
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            # Kill the whole group, so that children of the command die too.
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            timed_out = True
        truncated = len(stdout) > max_output or len(stderr) > max_output
        return ExecResult(
            exit_code=-1 if timed_out else process.returncode,
            stdout=stdout[:max_output],
            stderr=stderr[:max_output],
            timed_out=timed_out,
            truncated=truncated,
        )

    def _do_attach(self) -> Channel:
        if self._do_refresh() in {SandboxStatus.STOPPED, SandboxStatus.REMOVED}:
            msg = f"cannot attach to sandbox for session {self.session_id!r}: it is not running"
            raise SandboxStateError(msg)
        return _SocketChannel(self._directory / "attach.sock")

    def _do_refresh_secrets(self, secrets: SecretMaterial) -> None:
        _write_secrets(self._directory / "secrets", secrets)

    def _do_logs(self, tail: int | None) -> str:
        try:
            text = (self._directory / "output.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-tail:]) if tail else text


class ProcessProvider(SandboxProvider):
    """Runs each session as a local process group; for examples and tests only.

    Args:
        root: Folder holding one subfolder per sandbox; a short path, because
            Unix socket paths are limited to about 100 bytes.
    """

    name: ClassVar[str] = "example"
    capabilities: ClassVar[Capabilities] = Capabilities(
        exec=True,
        attach=True,
        lossless_pause=True,
        stop_start=True,
        persistent_disk=True,
        secret_files=True,
    )

    def __init__(self, root: str | Path | None = None, **_ignored: Any) -> None:
        default = Path(tempfile.gettempdir()) / f"pi-sandbox-example-{os.getuid()}"
        self.root = Path(root) if root else default
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<ProcessProvider root={str(self.root)!r}>"

    def check(self) -> ProviderCheck:
        """Report usable on POSIX systems with /proc."""
        if os.name != "posix" or not Path("/proc/self/stat").exists():
            return ProviderCheck(False, "needs a POSIX system with /proc", "use the docker provider")
        return ProviderCheck(True, f"sandboxes live under {self.root}")

    def start_supervisor(self, directory: Path) -> None:
        """Start the supervisor for ``directory`` and wait until its process runs."""
        for leftover in ("child.pid", "exit_status", "attach.sock"):
            (directory / leftover).unlink(missing_ok=True)
        subprocess.Popen(
            [sys.executable, "-m", "pi_sandbox_example._supervisor", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(directory / "supervisor.log").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while not (directory / "attach.sock").exists():
            if time.monotonic() > deadline or (directory / "exit_status").exists():
                log = (directory / "output.log").read_text(errors="replace")[-2000:]
                msg = "the sandbox's process did not start"
                raise SandboxFailedError(msg, log_tail=log)
            time.sleep(0.01)

    def _do_create(self, spec: SessionSpec, secrets: SecretMaterial) -> Sandbox:
        for index, mount in enumerate(spec.mounts):
            if not mount.source.exists():
                raise InvalidSpecError(f"mounts[{index}].source", f"{str(mount.source)!r} is missing")
        if spec.mounts:
            raise InvalidSpecError("mounts", "the example provider cannot mount folders")
        if self.find(spec.session_id) is not None:
            msg = f"a sandbox for session {spec.session_id!r} already exists"
            raise SandboxExistsError(msg)

        provider_id = f"{spec.session_id}-{random_tokens.token_hex(6)}"
        directory = self.root / provider_id
        directory.mkdir(mode=0o700)
        try:
            workspace = spec.workspace or directory / "workspace"
            workspace.mkdir(parents=True, exist_ok=True)
            _write_secrets(directory / "secrets", secrets)
            meta = {
                "session_id": spec.session_id,
                "provider_id": provider_id,
                "command": list(spec.command),
                "workspace": str(workspace),
                "workspace_owned": spec.workspace is None,
                "env": {
                    **spec.env,
                    "PI_SESSION_ID": spec.session_id,
                    "PI_SECRETS_DIR": str(directory / "secrets"),
                },
                "created_at": time.time(),
            }
            (directory / "meta.json").write_text(json.dumps(meta))
            self.start_supervisor(directory)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return ProcessSandbox(self, directory)

    def _directories(self) -> list[Path]:
        return [path for path in self.root.iterdir() if (path / "meta.json").exists()]

    def get(self, provider_id: str) -> Sandbox:
        """Return the sandbox with ``provider_id``."""
        directory = self.root / provider_id
        if "/" in provider_id or not (directory / "meta.json").exists():
            msg = f"no example sandbox with id {provider_id!r}"
            raise SandboxNotFoundError(msg)
        return ProcessSandbox(self, directory)

    def find(self, session_id: str) -> Sandbox | None:
        """Return the sandbox for ``session_id``, or None."""
        for directory in self._directories():
            if directory.name.rsplit("-", 1)[0] == session_id:
                return ProcessSandbox(self, directory)
        return None

    def list(self) -> list[SandboxInfo]:
        """List every sandbox under the root folder."""
        rows = []
        for directory in self._directories():
            sandbox = ProcessSandbox(self, directory)
            rows.append(SandboxInfo(sandbox.session_id, sandbox.provider_id, self.name, sandbox.status))
        return rows

    def cleanup(self) -> CleanupReport:
        """Remove the folders of sandboxes whose process has exited."""
        removed = 0
        for directory in self._directories():
            sandbox = ProcessSandbox(self, directory)
            if sandbox.status is SandboxStatus.STOPPED:
                shutil.rmtree(directory, ignore_errors=True)
                removed += 1
        return CleanupReport(sandboxes_removed=removed)
