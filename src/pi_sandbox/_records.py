"""Records that providers return: statuses, capabilities, listings and exec results."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

__all__ = ["Capabilities", "ExecResult", "SandboxEvent", "SandboxInfo", "SandboxStatus"]


class SandboxStatus(enum.Enum):
    """The lifecycle state of a sandbox."""

    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"
    REMOVED = "removed"


@attrs.frozen
class Capabilities:
    """The operations a provider supports. The contract suite checks each one declared true.

    Attributes:
        exec: Run a command inside a running sandbox (`Sandbox.exec`).
        attach: Open a JSON-lines `Channel` to the sandbox's main process.
        pty: Allocate a terminal for exec.
        lossless_pause: Pause keeps every process and its memory (a frozen cgroup,
            not a stop).
        stop_start: Stop and start again, keeping files but not processes.
        persistent_disk: Workspace and agent data survive stop and terminate.
        secret_files: Secrets arrive as read-only files under ``/run/secrets``.
        resource_limits: CPU, memory and process limits are enforced.
        network_isolation: ``network="none"`` cuts the sandbox off.
    """

    exec: bool = False
    attach: bool = False
    pty: bool = False
    lossless_pause: bool = False
    stop_start: bool = False
    persistent_disk: bool = False
    secret_files: bool = False
    resource_limits: bool = False
    network_isolation: bool = False


@attrs.frozen
class SandboxInfo:
    """One row of `SandboxProvider.list`, without any secret material.

    Attributes:
        session_id: The session the sandbox belongs to.
        provider_id: The provider's own id (a container id for Docker).
        provider: The provider's registered name.
        status: The status when the listing was made.
        image: The image reference the sandbox runs.
        created_at: When the sandbox was created, if the provider knows.
        labels: The sandbox's labels, including the provider's own.
    """

    session_id: str
    provider_id: str
    provider: str
    status: SandboxStatus
    image: str | None = None
    created_at: datetime | None = None
    labels: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ExecResult:
    """The outcome of a command run by `Sandbox.exec`.

    Attributes:
        exit_code: The process's exit status; -1 when it was killed for the timeout.
        stdout: Standard output, at most the call's ``max_output`` bytes.
        stderr: Standard error, at most the call's ``max_output`` bytes.
        timed_out: The timeout expired and the process was killed inside the sandbox.
        truncated: Output past ``max_output`` was dropped.
    """

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """Whether the command exited 0 within its timeout."""
        return self.exit_code == 0 and not self.timed_out


@attrs.frozen
class SandboxEvent:
    """A change in a sandbox's life, passed to the ``sandbox_event`` hook.

    Attributes:
        kind: One of ``created``, ``paused``, ``resumed``, ``stopped``,
            ``terminated`` and ``failed``.
        provider: The provider's registered name.
        session_id: The session the sandbox belongs to.
        provider_id: The provider's id, or None when creation failed before one existed.
        error: For ``failed``, the error that will be raised (never holding a secret).
    """

    kind: str
    provider: str
    session_id: str
    provider_id: str | None = None
    error: BaseException | None = None
