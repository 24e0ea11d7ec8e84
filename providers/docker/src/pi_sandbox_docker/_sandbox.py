"""`DockerSandbox`: the handle to one session's container."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pi_sandbox import (
    ExecResult,
    Sandbox,
    SandboxNotFoundError,
    SandboxStateError,
    SandboxStatus,
    SecretMaterial,
)
from pi_sandbox._secrets import check_env_deliverable, redact
from pi_sandbox._spec import AGENT_DIR_MOUNT, SECRETS_MOUNT, WORKSPACE_MOUNT

from . import _secretfiles
from ._engine import (
    LABEL_DEFAULT_DIRS,
    LABEL_IMAGE_ID,
    LABEL_SECRETS_ACCESS,
    LABEL_SESSION_ID,
    ContainerState,
)
from ._errors import DockerEngineError
from ._stream import DockerChannel, open_attach, run_exec

if TYPE_CHECKING:
    from ._provider import DockerProvider

__all__ = ["DockerSandbox"]

logger = logging.getLogger("pi_sandbox.docker")

_DATA_TARGETS = {"workspace": WORKSPACE_MOUNT, "agent_dir": AGENT_DIR_MOUNT}
# After a pause or unpause, the engine can still apply the runtime's event of
# an earlier one, so its state flips back for some milliseconds (seen on
# Docker 20.10 when pause and unpause follow each other quickly). A state
# counts as settled after this many equal reads in a row.
_SETTLED_READS = 2
_SETTLE_TIMEOUT = 5.0


class DockerSandbox(Sandbox):
    """A session's container; made by `DockerProvider`, never directly.

    The handle keeps the container's labels and mount sources from when it was
    looked up, so that `terminate` can still remove the folders after the
    container is gone. Everything else is asked from the engine on each call.
    """

    def __init__(self, provider: DockerProvider, info: Mapping[str, Any]) -> None:
        labels = dict(info["Config"].get("Labels") or {})
        super().__init__(provider, labels[LABEL_SESSION_ID], str(info["Id"]))
        self._docker = provider
        self._labels = labels
        self._mounts = {
            m["Destination"]: Path(m["Source"]) for m in info.get("Mounts") or [] if m.get("Source")
        }
        self._status = ContainerState.from_inspect(info["State"]).status
        # The init process id of the container run whose entrypoint is known to
        # have handed over to the command; a restart gets a new one.
        self._handed_over_pid: int | None = None

    @property
    def container_id(self) -> str:
        """The container's full id (the same as `provider_id`)."""
        return self._provider_id

    @property
    def image_id(self) -> str | None:
        """The id (``sha256:...``) of the image the container was created from."""
        return self._labels.get(LABEL_IMAGE_ID)

    @property
    def labels(self) -> dict[str, str]:
        """The container's labels."""
        return dict(self._labels)

    @property
    def secrets_dir(self) -> Path | None:
        """The host folder mounted read-only at ``/run/secrets``."""
        return self._mounts.get(SECRETS_MOUNT)

    def _subject(self) -> str:
        return f"of session {self._session_id!r} (container {self._provider_id[:12]})"

    def _log_extra(self) -> dict[str, str]:
        return {"pi_sandbox.session_id": self._session_id, "pi_sandbox.container_id": self._provider_id}

    def state(self) -> ContainerState:
        """Ask the engine for the container's state, including exit status and OOM kill.

        Raises:
            SandboxNotFoundError: The container no longer exists.
        """
        api = self._docker._api()
        with self._docker._errors("inspect the sandbox", self._subject()):
            info = api.inspect_container(self._provider_id)
        return ContainerState.from_inspect(info["State"])

    def _do_refresh(self) -> SandboxStatus:
        try:
            return self.state().status
        except SandboxNotFoundError:
            return SandboxStatus.REMOVED

    def _ensure_handover(self) -> None:
        """Wait, once per container run, until the entrypoint has finished reading the secrets."""
        if self._handed_over_pid is not None:
            # Already checked for this run. _do_stop clears it, and a restart by
            # other means gets a new handle through find() or get().
            return
        api = self._docker._api()
        with self._docker._errors("inspect the sandbox", self._subject()):
            info = api.inspect_container(self._provider_id)
        pid = info["State"].get("Pid")
        if not info["State"].get("Running") or info["State"].get("Paused") or pid == self._handed_over_pid:
            return
        self._docker._wait_handover(api, info)
        self._handed_over_pid = pid

    def _do_pause(self) -> None:
        # Resume may replace the secret files, which must not happen under an
        # entrypoint that is still reading them, and a paused one cannot finish.
        self._ensure_handover()
        try:
            with self._docker._errors("pause the sandbox", self._subject()):
                self._docker._api().pause(self._provider_id)
        except SandboxStateError:
            # 409: already paused (fine), or not running (explained below).
            state = self.state()
            if state.status is not SandboxStatus.PAUSED:
                msg = f"cannot pause the sandbox {self._subject()}: {state.describe()}"
                raise SandboxStateError(msg) from None
        self._settle("paused")
        logger.debug("paused sandbox of session %s", self._session_id, extra=self._log_extra())

    def _do_resume(self, secrets: SecretMaterial | None) -> None:
        if secrets is not None:
            check_env_deliverable(secrets)
        state = self.state()
        api = self._docker._api()
        lock = self._write_secrets(secrets)
        try:
            if state.status is SandboxStatus.PAUSED:
                with self._docker._errors("unpause the sandbox", self._subject()):
                    api.unpause(self._provider_id)
                self._settle("running")
            elif state.status is not SandboxStatus.RUNNING:
                # Started while the folder is still locked, so that cleanup in
                # another process cannot take the container for an ended one.
                with self._docker._errors("start the sandbox", self._subject()):
                    api.start(self._provider_id)
                material = _secretfiles.read_material(lock.path) if secrets is None else secrets
                self._docker._wait_running(api, self._provider_id, self._session_id, material)
        finally:
            lock.release()
        logger.debug("resumed sandbox of session %s", self._session_id, extra=self._log_extra())

    def _settle(self, engine_status: str) -> None:
        """Wait until the engine reports ``engine_status`` several reads in a row."""
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        matches = 0
        while matches < _SETTLED_READS:
            matches = matches + 1 if self.state().engine_status == engine_status else 0
            if time.monotonic() > deadline:
                logger.warning(
                    "the engine did not settle on %s for container %s",
                    engine_status,
                    self._provider_id[:12],
                    extra=self._log_extra(),
                )
                return
            if matches < _SETTLED_READS:
                time.sleep(0.002)

    def _write_secrets(self, secrets: SecretMaterial | None) -> _secretfiles.FolderLock:
        """Replace the secret files with ``secrets`` (None keeps them) and return the folder locked."""
        folder = self.secrets_dir
        if folder is None:
            msg = f"the sandbox {self._subject()} has no {SECRETS_MOUNT} mount; another tool made it"
            raise SandboxStateError(msg)
        access = _secretfiles.SecretsAccess.from_label(self._labels[LABEL_SECRETS_ACCESS])

        lock, created = _secretfiles.open_folder(folder, access)
        try:
            if created and secrets is None:
                logger.warning(
                    "the secrets folder of session %s was gone (host restarted?); the sandbox "
                    "starts with no secrets until resume() is given them",
                    self._session_id,
                    extra=self._log_extra(),
                )
            if created or secrets is not None:
                _secretfiles.replace_contents(lock, secrets or SecretMaterial(), access)
        except BaseException:
            lock.release()
            raise
        return lock

    def _do_stop(self, timeout: float) -> None:
        state = self.state()
        if state.status not in {SandboxStatus.RUNNING, SandboxStatus.PAUSED, SandboxStatus.CREATING}:
            return
        with self._docker._errors("stop the sandbox", self._subject()):
            self._docker._api().stop(self._provider_id, timeout=math.ceil(timeout))
        self._handed_over_pid = None
        logger.debug("stopped sandbox of session %s", self._session_id, extra=self._log_extra())

    def _do_terminate(self, *, remove_data: bool, timeout: float) -> None:
        api = self._docker._api()
        try:
            self._do_stop(timeout)
        except (SandboxNotFoundError, SandboxStateError, DockerEngineError):
            # The forced removal below ends the container whatever went wrong here.
            logger.debug("stopping container %s failed", self._provider_id[:12], exc_info=True)
        try:
            with self._docker._errors("remove the sandbox", self._subject()):
                api.remove_container(self._provider_id, v=True, force=True)
        except SandboxNotFoundError:
            pass
        except SandboxStateError:
            # 409: the engine is already removing it.
            logger.debug("container %s is already being removed", self._provider_id[:12])

        if self.secrets_dir is not None:
            _secretfiles.remove_folder(self.secrets_dir)
        if remove_data:
            self._remove_data()
        logger.info("terminated sandbox of session %s", self._session_id, extra=self._log_extra())

    def _remove_data(self) -> None:
        for field in filter(None, self._labels.get(LABEL_DEFAULT_DIRS, "").split(",")):
            path = self._mounts.get(_DATA_TARGETS.get(field, ""))
            if path is None or not path.exists():
                continue
            try:
                shutil.rmtree(path)
            except OSError:
                logger.warning(
                    "could not remove the %s folder %s of session %s",
                    field,
                    path,
                    self._session_id,
                    exc_info=True,
                    extra=self._log_extra(),
                )

    def _not_running(self, action: str) -> SandboxStateError:
        try:
            described = self.state().describe()
        except SandboxNotFoundError:
            described = "its container no longer exists"
        return SandboxStateError(
            f"cannot {action} in the sandbox {self._subject()}: {described}; call resume() first"
        )

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
        api = self._docker._api()
        try:
            with self._docker._errors("run a command", self._subject()):
                return run_exec(
                    api,
                    self._provider_id,
                    argv,
                    env=env,
                    workdir=workdir,
                    user=user,
                    stdin=stdin,
                    timeout=timeout,
                    max_output=max_output,
                )
        except SandboxStateError:
            raise self._not_running("run a command") from None

    def _do_attach(self) -> DockerChannel:
        api = self._docker._api()
        state = self.state()
        if state.status not in {SandboxStatus.RUNNING, SandboxStatus.PAUSED}:
            raise self._not_running("attach")
        with self._docker._errors("attach to the sandbox", self._subject()):
            connection = open_attach(api, self._provider_id)
        logger.debug("attached to sandbox of session %s", self._session_id, extra=self._log_extra())
        return DockerChannel(connection)

    def _do_refresh_secrets(self, secrets: SecretMaterial) -> None:
        check_env_deliverable(secrets)
        self._ensure_handover()  # also raises SandboxNotFoundError for a removed container
        self._write_secrets(secrets).release()

    def _do_logs(self, tail: int | None) -> str:
        api = self._docker._api()
        with self._docker._errors("read the logs", self._subject()):
            raw = api.logs(self._provider_id, stdout=True, stderr=True, tail="all" if tail is None else tail)
        text: str = raw.decode("utf-8", "replace")
        # The command may print what it was given; scrub the current secrets.
        folder = self.secrets_dir
        return redact(text, _secretfiles.read_material(folder)) if folder is not None else text
