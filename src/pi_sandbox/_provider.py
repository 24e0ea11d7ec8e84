"""The provider interface: `SandboxProvider` makes sandboxes, `Sandbox` controls one."""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from typing import ClassVar

import attrs

from ._channel import Channel
from ._errors import CapabilityNotSupportedError, SandboxStateError
from ._records import Capabilities, ExecResult, SandboxEvent, SandboxInfo, SandboxStatus
from ._secrets import SecretMaterial
from ._spec import SessionSpec

__all__ = ["DEFAULT_MAX_OUTPUT", "CleanupReport", "ProviderCheck", "Sandbox", "SandboxProvider"]

logger = logging.getLogger("pi_sandbox")

DEFAULT_MAX_OUTPUT = 10 * 1024 * 1024


@attrs.frozen
class ProviderCheck:
    """Whether a provider can work on this host, and if not, why and what to do.

    Attributes:
        usable: True when `SandboxProvider.create` is expected to work.
        detail: What was checked, or what is wrong.
        hint: What to do about it; empty when usable.
    """

    usable: bool
    detail: str
    hint: str = ""


@attrs.frozen
class CleanupReport:
    """The counts of what `SandboxProvider.cleanup` removed.

    Attributes:
        sandboxes_removed: Exited or orphaned sandboxes of this project removed.
        secret_dirs_removed: Secret folders removed because no live sandbox used them.
    """

    sandboxes_removed: int = 0
    secret_dirs_removed: int = 0


def _emit(event: SandboxEvent) -> None:
    # Imported here because the plugin manager imports this module's names.
    from ._plugins import plugin_manager  # noqa: PLC0415

    try:
        plugin_manager().sandbox_event(event)
    except Exception:
        # An observer's bug must not break the sandbox operation it observes.
        logger.warning(
            "sandbox_event hook failed for %s of session %s",
            event.kind,
            event.session_id,
            exc_info=True,
            extra={"pi_sandbox.session_id": event.session_id},
        )


class Sandbox(abc.ABC):
    """A handle to one sandbox; cheap to make, holding no connection of its own.

    The public methods check capabilities and report to the ``sandbox_event`` hook;
    providers implement the ``_do_*`` methods.
    """

    def __init__(self, provider: SandboxProvider, session_id: str, provider_id: str) -> None:
        self._provider = provider
        self._session_id = session_id
        self._provider_id = provider_id
        self._status = SandboxStatus.CREATING

    @property
    def provider(self) -> SandboxProvider:
        """The provider that controls this sandbox."""
        return self._provider

    @property
    def session_id(self) -> str:
        """The session this sandbox belongs to."""
        return self._session_id

    @property
    def provider_id(self) -> str:
        """The provider's own id for this sandbox."""
        return self._provider_id

    @property
    def status(self) -> SandboxStatus:
        """The status as last seen. `refresh` queries the provider again."""
        return self._status

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} session_id={self._session_id!r} "
            f"provider_id={self._provider_id[:12]!r} status={self._status.value}>"
        )

    def refresh(self) -> SandboxStatus:
        """Ask the provider for the current status, store it and return it."""
        self._status = self._do_refresh()
        return self._status

    def pause(self) -> None:
        """Freeze every process in the sandbox; memory and files are kept."""
        self._require("lossless_pause", "pause")
        self._do_pause()
        self._status = SandboxStatus.PAUSED
        self._emit("paused")

    def resume(self, secrets: SecretMaterial | Mapping[str, object] | None = None) -> None:
        """Continue a paused or stopped sandbox, first replacing its secrets with ``secrets``.

        Args:
            secrets: The complete set of secrets the sandbox should now have; None
                keeps the current set. Secrets missing from it disappear.
        """
        material = _to_material(secrets)
        self._do_resume(material)
        self._status = SandboxStatus.RUNNING
        self._emit("resumed")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process, after a grace period of ``timeout`` seconds; files stay."""
        self._require("stop_start", "stop")
        self._do_stop(timeout)
        self._status = SandboxStatus.STOPPED
        self._emit("stopped")

    def terminate(self, *, remove_data: bool = False, timeout: float = 10.0) -> None:
        """Stop and remove the sandbox and its secrets; repeated calls are harmless.

        Args:
            remove_data: Also delete the session's workspace and agent folders when
                the provider made them.
            timeout: Seconds the processes get to exit before they are killed.
        """
        self._do_terminate(remove_data=remove_data, timeout=timeout)
        self._status = SandboxStatus.REMOVED
        self._emit("terminated")

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
        user: str | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> ExecResult:
        """Run ``argv`` inside the sandbox, without a shell, and wait for it.

        Args:
            argv: The program and its arguments; wrap in ``["sh", "-c", ...]`` for a shell.
            env: Extra environment variables for this command.
            workdir: Absolute working folder inside the sandbox.
            timeout: Seconds before the process is killed inside the sandbox.
            stdin: Bytes fed to standard input, which is then closed.
            user: Run as this user instead of the sandbox's.
            max_output: Bytes kept of stdout and of stderr each; more sets ``truncated``.
        """
        self._require("exec", "exec")
        if isinstance(argv, str) or not argv:
            msg = "argv must be a non-empty sequence of strings; use ['sh', '-c', text] for a shell"
            raise ValueError(msg)
        if workdir is not None and not workdir.startswith("/"):
            msg = f"workdir {workdir!r} must be an absolute path inside the sandbox"
            raise ValueError(msg)
        if timeout is not None and timeout <= 0:
            msg = f"timeout must be positive seconds, got {timeout!r}"
            raise ValueError(msg)
        return self._do_exec(
            list(argv),
            env=dict(env or {}),
            workdir=workdir,
            timeout=timeout,
            stdin=stdin,
            user=user,
            max_output=max_output,
        )

    def attach(self) -> Channel:
        """Open a `Channel` to the sandbox's main process; closing it leaves the sandbox running."""
        self._require("attach", "attach")
        return self._do_attach()

    def refresh_secrets(self, secrets: SecretMaterial | Mapping[str, object]) -> None:
        """Replace the sandbox's secret files with ``secrets`` while it runs.

        Processes that already read their environment keep the old values. pi reads
        its keys at start, so use `resume` after a stop for them to take effect.
        """
        self._require("secret_files", "refresh_secrets")
        self._do_refresh_secrets(_to_material(secrets) or SecretMaterial())

    def logs(self, tail: int | None = None) -> str:
        """Return the main process's output (standard error included), last ``tail`` lines."""
        return self._do_logs(tail)

    def _require(self, capability: str, operation: str) -> None:
        if not getattr(self._provider.capabilities, capability):
            msg = f"provider {self._provider.name!r} does not support {operation} ({capability} is false)"
            raise CapabilityNotSupportedError(msg)
        if self._status is SandboxStatus.REMOVED:
            msg = f"sandbox for session {self._session_id!r} was terminated"
            raise SandboxStateError(msg)

    def _emit(self, kind: str, error: BaseException | None = None) -> None:
        _emit(SandboxEvent(kind, self._provider.name, self._session_id, self._provider_id, error))

    @abc.abstractmethod
    def _do_refresh(self) -> SandboxStatus: ...

    def _do_pause(self) -> None:
        raise CapabilityNotSupportedError(f"{self._provider.name} cannot pause")

    @abc.abstractmethod
    def _do_resume(self, secrets: SecretMaterial | None) -> None: ...

    def _do_stop(self, timeout: float) -> None:
        raise CapabilityNotSupportedError(f"{self._provider.name} cannot stop")

    @abc.abstractmethod
    def _do_terminate(self, *, remove_data: bool, timeout: float) -> None: ...

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
        raise CapabilityNotSupportedError(f"{self._provider.name} cannot exec")

    def _do_attach(self) -> Channel:
        raise CapabilityNotSupportedError(f"{self._provider.name} cannot attach")

    def _do_refresh_secrets(self, secrets: SecretMaterial) -> None:
        raise CapabilityNotSupportedError(f"{self._provider.name} cannot refresh secrets")

    @abc.abstractmethod
    def _do_logs(self, tail: int | None) -> str: ...


def _to_material(secrets: SecretMaterial | Mapping[str, object] | None) -> SecretMaterial | None:
    if secrets is None or isinstance(secrets, SecretMaterial):
        return secrets
    return SecretMaterial(secrets)  # type: ignore[arg-type]


class SandboxProvider(abc.ABC):
    """Makes and finds sandboxes of one kind (Docker containers, VMs, ...).

    Subclasses set `name` and `capabilities` and implement the ``_do_*`` methods and
    the lookups. A provider instance keeps clients and configuration, never the
    state of its sandboxes. `find` and `list` work from what the backend reports, so
    a new process controls sandboxes an earlier one made.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    @abc.abstractmethod
    def check(self) -> ProviderCheck:
        """Report whether this provider can create sandboxes here, and if not, why."""

    def create(
        self,
        spec: SessionSpec,
        secrets: SecretMaterial | Mapping[str, object] | None = None,
    ) -> Sandbox:
        """Create and start a sandbox for ``spec`` with ``secrets`` and return it running.

        On failure everything this call made is removed before the error is raised.

        Raises:
            SandboxExistsError: A sandbox for ``spec.session_id`` already exists.
            SandboxFailedError: The sandbox did not reach running; carries its last output.
            PiSandboxError: Any other failure, always a subclass of it.
        """
        if not isinstance(spec, SessionSpec):
            msg = f"spec must be a SessionSpec, got {type(spec).__name__}"
            raise TypeError(msg)
        material = _to_material(secrets) or SecretMaterial()
        try:
            sandbox = self._do_create(spec, material)
        except Exception as error:
            _emit(SandboxEvent("failed", self.name, spec.session_id, None, error))
            raise
        _emit(SandboxEvent("created", self.name, spec.session_id, sandbox.provider_id))
        return sandbox

    @abc.abstractmethod
    def _do_create(self, spec: SessionSpec, secrets: SecretMaterial) -> Sandbox: ...

    @abc.abstractmethod
    def get(self, provider_id: str) -> Sandbox:
        """Return the sandbox with this provider id.

        Raises:
            SandboxNotFoundError: No sandbox of this project has that id.
        """

    @abc.abstractmethod
    def find(self, session_id: str) -> Sandbox | None:
        """Return the sandbox for ``session_id``, or None when there is none."""

    @abc.abstractmethod
    def list(self) -> list[SandboxInfo]:
        """List this project's sandboxes on this provider; never includes secrets."""

    @abc.abstractmethod
    def cleanup(self) -> CleanupReport:
        """Remove exited sandboxes and orphaned secret folders of this project."""

    def close(self) -> None:  # noqa: B027 - a no-op default is the right default
        """Release clients and connections; sandboxes keep running."""

    def __enter__(self) -> SandboxProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
