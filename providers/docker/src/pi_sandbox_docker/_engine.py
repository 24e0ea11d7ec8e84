"""Talking to the Docker engine: the client, the labels, container states and errors."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final

import attrs
import docker
import docker.errors
import requests.exceptions

from pi_sandbox import (
    ProviderUnavailableError,
    SandboxNotFoundError,
    SandboxStateError,
    SandboxStatus,
)
from pi_sandbox._spec import PROJECT_LABEL_PREFIX

from ._errors import DockerEngineError

__all__ = [
    "LABEL_DEFAULT_DIRS",
    "LABEL_IMAGE_ID",
    "LABEL_MANAGED",
    "LABEL_OWNER",
    "LABEL_PROVIDER",
    "LABEL_SECRETS_ACCESS",
    "LABEL_SESSION_ID",
    "LABEL_SPEC_HASH",
    "PROVIDER_LABEL_KEYS",
    "ContainerState",
    "connect",
    "engine_errors",
    "engine_url",
]

LABEL_MANAGED: Final = f"{PROJECT_LABEL_PREFIX}managed"
LABEL_SESSION_ID: Final = f"{PROJECT_LABEL_PREFIX}session-id"
LABEL_OWNER: Final = f"{PROJECT_LABEL_PREFIX}owner"
LABEL_SPEC_HASH: Final = f"{PROJECT_LABEL_PREFIX}spec-hash"
LABEL_PROVIDER: Final = f"{PROJECT_LABEL_PREFIX}provider"
LABEL_IMAGE_ID: Final = f"{PROJECT_LABEL_PREFIX}image-id"
# The names of the provider's per-session folders among /workspace and
# /data/agent (comma-separated "workspace", "agent_dir"). Only those are
# deleted by terminate(remove_data=True).
LABEL_DEFAULT_DIRS: Final = f"{PROJECT_LABEL_PREFIX}default-dirs"
# The ownership of the secret files (see SecretsAccess.to_label), so that a
# later process rewrites them the way this container reads them.
LABEL_SECRETS_ACCESS: Final = f"{PROJECT_LABEL_PREFIX}secrets-access"
PROVIDER_LABEL_KEYS: Final = frozenset(
    {
        LABEL_MANAGED,
        LABEL_SESSION_ID,
        LABEL_OWNER,
        LABEL_SPEC_HASH,
        LABEL_PROVIDER,
        LABEL_IMAGE_ID,
        LABEL_DEFAULT_DIRS,
        LABEL_SECRETS_ACCESS,
    }
)

DEFAULT_ENGINE_URL: Final = "unix:///var/run/docker.sock"

# Exit statuses of a main process ended by SIGHUP, SIGINT, SIGKILL or SIGTERM
# (128 + signal number): what `docker stop` and an engine shutdown produce.
# Unless the kernel's out-of-memory killer sent the SIGKILL, they count as a
# stop rather than a failure.
_STOP_EXIT_CODES: Final = frozenset({0, 129, 130, 137, 143})
_TIMESTAMP: Final = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def engine_url(base_url: str | None) -> str:
    """Return the engine address in use: ``base_url``, ``$DOCKER_HOST`` or the local socket."""
    return base_url or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE_URL


def _unavailable(url: str, error: BaseException) -> ProviderUnavailableError:
    reason = type(error).__name__
    if isinstance(error, requests.exceptions.ReadTimeout):
        reason = "it did not respond in time"
    elif "No such file or directory" in str(error) or "FileNotFoundError" in str(error):
        reason = "the socket does not exist"
    elif "Connection refused" in str(error) or "ConnectionRefusedError" in str(error):
        reason = "the connection was refused"
    elif "Permission denied" in str(error) or "PermissionError" in str(error):
        return ProviderUnavailableError(
            f"permission denied on the Docker engine socket at {url}; add this user to the "
            "docker group (then log in again), or run as root"
        )
    return ProviderUnavailableError(
        f"the Docker engine at {url} is not reachable ({reason}); start it (Linux: "
        "`sudo systemctl start docker`; macOS and Windows: start Docker Desktop), or set "
        "DOCKER_HOST to the address of a running engine"
    )


def connect(base_url: str | None) -> docker.DockerClient:
    """Open a client for the engine at ``base_url``, or as ``docker.from_env`` finds it.

    Raises:
        ProviderUnavailableError: The engine does not respond.
    """
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url)
        return docker.from_env()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise _unavailable(engine_url(base_url), error) from None


@contextlib.contextmanager
def engine_errors(url: str, action: str, *, subject: str = "") -> Iterator[None]:
    """Translate docker SDK errors raised in the block into pi-sandbox errors.

    Args:
        url: The engine address, for the message when it is unreachable.
        action: What was being done, as a verb phrase (``"pause the sandbox"``).
        subject: Who it was done to, appended to messages (``"of session x"``).
    """
    where = f" {subject}" if subject else ""
    try:
        yield
    except docker.errors.NotFound as error:
        msg = f"cannot {action}{where}: {_explanation(error)}"
        raise SandboxNotFoundError(msg) from None
    except docker.errors.APIError as error:
        if error.status_code == 409:
            msg = f"cannot {action}{where}: {_explanation(error)}"
            raise SandboxStateError(msg) from None
        raise DockerEngineError(action + where, error.status_code, _explanation(error)) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise _unavailable(url, error) from None


def _explanation(error: docker.errors.APIError) -> str:
    text = error.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text or error).strip()


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    match = _TIMESTAMP.fullmatch(value)
    if not match:
        return None
    # The engine gives nanoseconds; datetime keeps microseconds.
    fraction = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(f"{match.group(1)}{fraction}{zone}")


@attrs.frozen
class ContainerState:
    """The engine's view of a sandbox's container, from ``docker inspect``.

    Attributes:
        status: The sandbox status it maps to.
        engine_status: The engine's own word: created, running, paused,
            restarting, removing, exited or dead.
        exit_code: The main process's exit status once it exited, else None.
        oom_killed: The kernel's out-of-memory killer ended the main process.
        error: The engine's error text, for example why a start failed.
        started_at: When the main process last started.
        finished_at: When it last exited.
    """

    status: SandboxStatus
    engine_status: str
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_inspect(cls, state: Mapping[str, Any]) -> ContainerState:
        """Build the record from the ``State`` object of ``docker inspect``."""
        engine_status = str(state.get("Status", ""))
        exit_code = state.get("ExitCode")
        oom_killed = bool(state.get("OOMKilled"))
        error = str(state.get("Error") or "")
        exited = engine_status in {"exited", "dead"}
        return cls(
            status=_status(engine_status, exit_code, oom_killed, error),
            engine_status=engine_status,
            exit_code=exit_code if exited and isinstance(exit_code, int) else None,
            oom_killed=oom_killed and exited,
            error=error,
            started_at=_parse_time(state.get("StartedAt")),
            finished_at=_parse_time(state.get("FinishedAt")),
        )

    def describe(self) -> str:
        """Return the state in words, for messages."""
        if self.oom_killed:
            return (
                "its main process was killed by the kernel's out-of-memory killer; give it "
                "more memory (resources.memory_mb) and call resume() to start it again"
            )
        if self.engine_status == "exited":
            described = f"it exited with status {self.exit_code}"
            if self.status is SandboxStatus.STOPPED:
                return f"{described} (stopped)"
            return f"{described}{f': {self.error}' if self.error else ''}"
        if self.engine_status == "dead":
            return f"the engine marked it dead{f': {self.error}' if self.error else ''}"
        return f"it is {self.engine_status}"


def _status(engine_status: str, exit_code: object, oom_killed: bool, error: str) -> SandboxStatus:
    if engine_status == "running":
        return SandboxStatus.RUNNING
    if engine_status == "paused":
        return SandboxStatus.PAUSED
    if engine_status in {"created", "restarting"}:
        return SandboxStatus.CREATING
    if engine_status == "removing":
        return SandboxStatus.REMOVED
    if engine_status == "exited" and not oom_killed and not error and exit_code in _STOP_EXIT_CODES:
        return SandboxStatus.STOPPED
    return SandboxStatus.ERROR
