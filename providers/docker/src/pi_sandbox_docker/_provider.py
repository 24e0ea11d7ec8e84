"""`DockerProvider`: makes, finds and cleans up one hardened container per session."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import docker
import docker.errors
import docker.types
import platformdirs
from docker.utils import parse_repository_tag

from pi_sandbox import (
    Capabilities,
    CleanupReport,
    ImageNotFoundError,
    InvalidSpecError,
    PiSandboxError,
    ProviderCheck,
    ProviderUnavailableError,
    Resources,
    ResourceTier,
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
from pi_sandbox._secrets import check_env_deliverable, redact
from pi_sandbox._spec import (
    AGENT_DIR_MOUNT,
    LABEL_KEY_PATTERN,
    SECRETS_MOUNT,
    WORKSPACE_MOUNT,
    validate_session_id,
)

from . import _secretfiles
from ._engine import (
    LABEL_DEFAULT_DIRS,
    LABEL_IMAGE_ID,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_PROVIDER,
    LABEL_SECRETS_ACCESS,
    LABEL_SESSION_ID,
    LABEL_SPEC_HASH,
    PROVIDER_LABEL_KEYS,
    ContainerState,
    connect,
    engine_errors,
    engine_url,
)
from ._errors import ContainerNameTakenError, DockerEngineError
from ._sandbox import DockerSandbox

__all__ = ["DEFAULT_IMAGE", "DockerProvider"]

logger = logging.getLogger("pi_sandbox.docker")

DEFAULT_IMAGE: Final = "pi-sandbox-local:latest"
IMAGE_ENV: Final = "SANDBOX_DOCKER_IMAGE"
CONTAINER_PREFIX: Final = "pi-sandbox-"
DEFAULT_OWNER: Final = "default"
PULL_POLICIES: Final = ("missing", "never", "always")
_LOG_TAIL_LINES: Final = 50
# Seconds create and resume wait for the image's entrypoint to hand over to the command.
HANDOVER_TIMEOUT: Final = 10.0
# A read-only root still needs a writable /tmp, in memory and private to the sandbox.
_WRITABLE_TMP: Final = {"/tmp": "rw,nosuid,nodev,mode=1777"}  # noqa: S108
_CAPABILITY_NAME = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")

PullPolicy = Literal["missing", "never", "always"]

# Called with the name of each create step once it is done. Tests set it to
# stop a create at a known point, for example to SIGKILL the process there.
_step_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if _step_hook is not None:
        _step_hook(name)


@attrs.frozen
class _DataDir:
    field: str
    target: str
    path: Path
    default: bool


class DockerProvider(SandboxProvider):
    """Runs each session in its own container on a Docker engine.

    Args:
        image: The image for specs that name none. Defaults to
            ``$SANDBOX_DOCKER_IMAGE``, then ``pi-sandbox-local:latest``.
        base_url: The engine address (``unix:///...``, ``tcp://...``); None reads
            ``DOCKER_HOST`` and the other variables ``docker.from_env`` reads.
        state_dir: Where per-session folders go (``workspaces/<id>``,
            ``agent/<id>``); defaults to the user state folder of pi-sandbox,
            subfolder ``docker``.
        secrets_dir: The private root of the secrets folders; defaults to
            ``/dev/shm/pi-sandbox-secrets-<uid>`` where ``/dev/shm`` is memory-backed,
            else ``<state_dir>/secrets``.
        network: The network for specs that ask for ``"bridge"`` (the default),
            for example a user-defined network. Other values in a spec are used
            as given.
        pull_policy: ``"missing"`` pulls an image that is not present,
            ``"never"`` raises `ImageNotFoundError` instead, ``"always"`` pulls on
            every create.
        pull_progress: Called with each progress record (a dict from the engine)
            while an image is pulled.
        runtime: The OCI runtime (``runsc`` for gVisor, ...) for specs whose
            hardening names none.
        tiers: Concrete limits per `ResourceTier` on this host, replacing the
            defaults for specs whose resources equal a tier's defaults.
        secrets_gid: The group of the secret files; defaults to 47000 when this
            process is root and to its own group otherwise.
        owner: The name of the application instance that makes the sandboxes
            (letters, digits, ``-``, ``_``). Lookups and cleanup see only this
            owner's sandboxes. Defaults to ``default``.
        extra_labels: Labels added to every container, for example to mark test
            sandboxes; keys under ``dev.pi-sandbox.`` are allowed except the
            provider's own.
        start_timeout: Seconds a new container may take to reach running.
    """

    name = "docker"
    capabilities = Capabilities(
        exec=True,
        attach=True,
        pty=False,
        lossless_pause=True,
        stop_start=True,
        persistent_disk=True,
        secret_files=True,
        resource_limits=True,
        network_isolation=True,
    )

    def __init__(
        self,
        image: str | None = None,
        *,
        base_url: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        secrets_dir: str | os.PathLike[str] | None = None,
        network: str | None = None,
        pull_policy: PullPolicy = "missing",
        pull_progress: Callable[[dict[str, Any]], None] | None = None,
        runtime: str | None = None,
        tiers: Mapping[ResourceTier | str, Resources] | None = None,
        secrets_gid: int | None = None,
        owner: str | None = None,
        extra_labels: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if pull_policy not in PULL_POLICIES:
            msg = f"pull_policy {pull_policy!r} must be one of {', '.join(PULL_POLICIES)}"
            raise ValueError(msg)
        owner = owner or DEFAULT_OWNER
        if not _secretfiles.OWNER_PATTERN.fullmatch(owner):
            msg = f"owner {owner!r} must be 1 to 64 letters, digits, '-' and '_'"
            raise ValueError(msg)
        if secrets_gid is not None and (
            isinstance(secrets_gid, bool) or not isinstance(secrets_gid, int) or secrets_gid < 0
        ):
            msg = f"secrets_gid {secrets_gid!r} must be a non-negative integer group id"
            raise ValueError(msg)
        if start_timeout <= 0:
            msg = f"start_timeout must be positive seconds, got {start_timeout!r}"
            raise ValueError(msg)

        self._image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        self._base_url = base_url
        self._url = engine_url(base_url)
        self._state_dir = (
            Path(state_dir) if state_dir else Path(platformdirs.user_state_dir("pi-sandbox")) / "docker"
        )
        self._secrets_root = Path(secrets_dir) if secrets_dir else _secretfiles.default_root(self._state_dir)
        self._network = network
        self._pull_policy = pull_policy
        self._pull_progress = pull_progress
        self._runtime = runtime
        self._tiers = _check_tiers(tiers)
        self._secrets_gid = secrets_gid
        self._owner = owner
        self._extra_labels = _check_extra_labels(extra_labels)
        self._start_timeout = start_timeout
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DockerProvider engine={self._url!r} image={self._image!r} owner={self._owner!r}>"

    @property
    def owner(self) -> str:
        """The application instance name this provider's sandboxes are labelled with."""
        return self._owner

    @property
    def image(self) -> str:
        """The image used for specs that name none."""
        return self._image

    @property
    def secrets_root(self) -> Path:
        """The root folder of the per-session secrets folders."""
        return self._secrets_root

    @property
    def state_dir(self) -> Path:
        """The folder of the per-session workspace and agent folders."""
        return self._state_dir

    # Engine access, shared with DockerSandbox.

    def _api(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = connect(self._base_url)
            return self._client.api

    def _errors(self, action: str, subject: str = "") -> Any:
        return engine_errors(self._url, action, subject=subject)

    def close(self) -> None:
        """Close the engine connection; sandboxes keep running."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # Checks

    def check(self) -> ProviderCheck:
        """Report whether the engine responds, the default image is present and the secrets root is usable."""
        try:
            api = self._api()
            with self._errors("report its version"):
                version = api.version()
                info = api.info()
        except PiSandboxError as error:
            return ProviderCheck(False, str(error), "start the Docker engine, or set DOCKER_HOST")
        details = [f"Docker Engine {version.get('Version', '?')} at {self._url}"]

        security = " ".join(info.get("SecurityOptions") or [])
        if "name=userns" in security or "name=rootless" in security:
            details.append(
                "the engine remaps user ids (userns-remap or rootless), so the sandbox's user "
                "may be unable to read its secret files"
            )

        try:
            _secretfiles.ensure_root(self._secrets_root)
        except (ProviderUnavailableError, OSError) as error:
            return ProviderCheck(False, f"{details[0]}; {error}", "pass a writable secrets_dir")

        try:
            with self._errors("inspect the image"):
                image_id = api.inspect_image(self._image)["Id"]
            details.append(f"image {self._image} is present ({image_id[:19]})")
        except SandboxNotFoundError:
            if self._pull_policy == "never":
                return ProviderCheck(
                    False, f"{details[0]}; image {self._image} is not present", _image_hint(self._image)
                )
            details.append(f"image {self._image} is not present and will be pulled on first use")
        return ProviderCheck(True, "; ".join(details))

    # Create

    def _do_create(self, spec: SessionSpec, secrets: SecretMaterial) -> DockerSandbox:
        session_id = spec.session_id
        image = spec.image or self._image
        _check_secrets_outside_spec(spec, secrets)
        check_env_deliverable(secrets)
        data_dirs = self._data_dirs(spec)
        _check_mount_sources(spec)
        _check_capabilities(spec.hardening.add_capabilities)
        access = _secretfiles.choose_access(spec.user, self._secrets_gid)

        api = self._api()
        self._check_name_free(api, session_id)
        image_id = self._ensure_image(api, image)
        root = _secretfiles.ensure_root(self._secrets_root)

        created_dirs: list[Path] = []
        lock: _secretfiles.FolderLock | None = None
        container_id: str | None = None
        try:
            _make_data_dirs(data_dirs, spec.user, created_dirs)
            lock = _secretfiles.create_folder(root, self._owner, session_id, secrets, access)
            _step("secrets-written")

            container_id = self._create_container(
                api,
                spec=spec,
                image=image,
                image_id=image_id,
                data_dirs=data_dirs,
                secrets_folder=lock.path,
                access=access,
            )
            _step("container-created")
            with self._errors("start the container", f"of session {session_id!r}"):
                api.start(container_id)
            _step("container-started")
            info = self._wait_running(api, container_id, session_id, secrets)
        except BaseException as error:
            log_tail = self._log_tail(api, container_id, secrets)
            self._roll_back(api, container_id, lock, created_dirs)
            if not isinstance(error, Exception) or isinstance(error, _PASSED_THROUGH):
                raise
            msg = f"the sandbox of session {session_id!r} did not start: {redact(str(error), secrets)}"
            raise SandboxFailedError(
                msg, session_id=session_id, container_id=container_id, log_tail=log_tail
            ) from error
        finally:
            if lock is not None:
                lock.release()

        logger.info(
            "created sandbox of session %s in container %s (image %s)",
            session_id,
            container_id[:12],
            image,
            extra={"pi_sandbox.session_id": session_id, "pi_sandbox.container_id": container_id},
        )
        return DockerSandbox(self, info)

    def _data_dirs(self, spec: SessionSpec) -> list[_DataDir]:
        dirs = []
        for field, target, requested, default_parent in (
            ("workspace", WORKSPACE_MOUNT, spec.workspace, "workspaces"),
            ("agent_dir", AGENT_DIR_MOUNT, spec.agent_dir, "agent"),
        ):
            if requested is None:
                dirs.append(_DataDir(field, target, self._state_dir / default_parent / spec.session_id, True))
                continue
            if not requested.is_dir():
                raise InvalidSpecError(
                    field, f"{str(requested)!r} does not exist or is not a folder; create it first"
                )
            dirs.append(_DataDir(field, target, requested, False))
        return dirs

    def _check_name_free(self, api: Any, session_id: str) -> None:
        name = CONTAINER_PREFIX + session_id
        try:
            with self._errors("look up the container name", repr(name)):
                info = api.inspect_container(name)
        except SandboxNotFoundError:
            return
        labels = info["Config"].get("Labels") or {}
        if labels.get(LABEL_MANAGED) != "1":
            raise ContainerNameTakenError(name, info["Id"])
        state = ContainerState.from_inspect(info["State"])
        msg = (
            f"a sandbox for session {session_id!r} already exists (container {info['Id'][:12]}, "
            f"owner {labels.get(LABEL_OWNER)!r}, {state.status.value}); use find() to control it, "
            "or terminate() it first"
        )
        raise SandboxExistsError(msg)

    def _ensure_image(self, api: Any, image: str) -> str:
        if self._pull_policy == "always":
            self._pull(api, image)
        try:
            with self._errors("inspect the image", repr(image)):
                return str(api.inspect_image(image)["Id"])
        except SandboxNotFoundError:
            if self._pull_policy == "never":
                hint = f"{_image_hint(image)}, or allow pulls with pull_policy='missing'"
                raise ImageNotFoundError(image, hint) from None
        self._pull(api, image)
        with self._errors("inspect the image", repr(image)):
            return str(api.inspect_image(image)["Id"])

    def _pull(self, api: Any, image: str) -> None:
        repository, tag = parse_repository_tag(image)
        logger.info("pulling image %s", image)
        try:
            with self._errors("pull the image", repr(image)):
                for record in api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                    if "error" in record:
                        reason = _first_line(record["error"])
                        msg = f"it is not present and pulling it failed: {reason}; {_image_hint(image)}"
                        raise ImageNotFoundError(image, msg)
                    if self._pull_progress is not None:
                        self._pull_progress(record)
        except (SandboxNotFoundError, SandboxStateError, DockerEngineError) as error:
            msg = f"it is not present and pulling it failed: {_first_line(str(error))}; {_image_hint(image)}"
            raise ImageNotFoundError(image, msg) from None
        logger.info("pulled image %s", image)

    def _create_container(
        self,
        api: Any,
        *,
        spec: SessionSpec,
        image: str,
        image_id: str,
        data_dirs: list[_DataDir],
        secrets_folder: Path,
        access: _secretfiles.SecretsAccess,
    ) -> str:
        resources = self._resources(spec.resources)
        hardening = spec.hardening
        mounts = [docker.types.Mount(d.target, str(d.path), type="bind") for d in data_dirs]
        mounts.append(docker.types.Mount(SECRETS_MOUNT, str(secrets_folder), type="bind", read_only=True))
        mounts += [
            docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
        network = self._network if spec.network == "bridge" and self._network else spec.network
        memory = f"{resources.memory_mb}m"

        with self._errors("create the container", f"of session {spec.session_id!r}"):
            host_config = api.create_host_config(
                mounts=mounts,
                network_mode=network,
                cap_drop=["ALL"] if hardening.drop_capabilities else None,
                cap_add=[c.upper().removeprefix("CAP_") for c in hardening.add_capabilities] or None,
                security_opt=["no-new-privileges:true"] if hardening.no_new_privileges else None,
                pids_limit=resources.pids,
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=int(resources.cpus * 1e9),
                group_add=[str(access.group_add)] if access.group_add is not None else None,
                runtime=hardening.runtime or self._runtime,
                read_only=hardening.read_only_root,
                tmpfs=_WRITABLE_TMP if hardening.read_only_root else None,
                # docker-init as process 1 forwards signals to the command and
                # reaps orphaned processes, which the command may not do.
                init=True,
            )
            try:
                created = api.create_container(
                    image=image,
                    command=list(spec.command),
                    name=CONTAINER_PREFIX + spec.session_id,
                    user=spec.user,
                    environment=self._environment(spec),
                    labels=self._labels(spec, image_id, data_dirs, access),
                    working_dir=WORKSPACE_MOUNT,
                    # Open stdin without StdinOnce, so that closing one attach
                    # connection does not close the command's input.
                    stdin_open=True,
                    detach=True,
                    tty=False,
                    host_config=host_config,
                    use_config_proxy=False,
                )
            except docker.errors.APIError as error:
                if error.status_code == 409:
                    # Another process created the name since the check.
                    self._check_name_free(api, spec.session_id)
                raise
        container_id = str(created["Id"])
        logger.debug(
            "created container %s for session %s",
            container_id[:12],
            spec.session_id,
            extra={"pi_sandbox.session_id": spec.session_id, "pi_sandbox.container_id": container_id},
        )
        return container_id

    def _resources(self, resources: Resources) -> Resources:
        for tier, override in self._tiers.items():
            if resources == tier.resources():
                return override
        return resources

    @staticmethod
    def _environment(spec: SessionSpec) -> dict[str, str]:
        return {
            **spec.env,
            "PI_SESSION_ID": spec.session_id,
            "PI_SECRETS_DIR": SECRETS_MOUNT,
            "PI_CODING_AGENT_DIR": AGENT_DIR_MOUNT,
        }

    def _labels(
        self,
        spec: SessionSpec,
        image_id: str,
        data_dirs: list[_DataDir],
        access: _secretfiles.SecretsAccess,
    ) -> dict[str, str]:
        spec_hash = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()
        return {
            **self._extra_labels,
            **spec.labels,
            LABEL_MANAGED: "1",
            LABEL_PROVIDER: self.name,
            LABEL_SESSION_ID: spec.session_id,
            LABEL_OWNER: self._owner,
            LABEL_SPEC_HASH: spec_hash,
            LABEL_IMAGE_ID: image_id,
            LABEL_DEFAULT_DIRS: ",".join(d.field for d in data_dirs if d.default),
            LABEL_SECRETS_ACCESS: access.to_label(),
        }

    def _wait_running(
        self, api: Any, container_id: str, session_id: str, secrets: SecretMaterial | None
    ) -> dict[str, Any]:
        """Poll the container with backoff until it runs; raise `SandboxFailedError` if it ends first."""
        deadline = time.monotonic() + self._start_timeout
        delay = 0.002
        while True:
            with self._errors("inspect the container", f"of session {session_id!r}"):
                info: dict[str, Any] = api.inspect_container(container_id)
            state = ContainerState.from_inspect(info["State"])
            if state.status in {SandboxStatus.RUNNING, SandboxStatus.PAUSED}:
                return info
            if state.engine_status in {"exited", "dead", "removing"}:
                raise SandboxFailedError(
                    f"the sandbox of session {session_id!r} ended while starting: {state.describe()}",
                    session_id=session_id,
                    container_id=container_id,
                    exit_status=state.exit_code,
                    log_tail=self._log_tail(api, container_id, secrets),
                )
            if time.monotonic() > deadline:
                raise SandboxFailedError(
                    f"the sandbox of session {session_id!r} was not running after "
                    f"{self._start_timeout} seconds ({state.describe()})",
                    session_id=session_id,
                    container_id=container_id,
                    log_tail=self._log_tail(api, container_id, secrets),
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _wait_handover(self, api: Any, info: Mapping[str, Any]) -> None:
        """Wait until the image's entrypoint has replaced itself with the command.

        The entrypoint reads the secret files. Until it is done, replacing them
        could delete a file it is about to read, which stops the container, so
        `DockerSandbox` calls this before pausing (resume may then replace the
        files) and before refresh_secrets. An entrypoint that stays running as
        the command's parent is given up on after `HANDOVER_TIMEOUT` seconds.
        """
        entrypoint = info["Config"].get("Entrypoint") or []
        if not entrypoint:
            return
        marker = entrypoint[0]
        init_pid = str(info["State"].get("Pid"))
        deadline = time.monotonic() + HANDOVER_TIMEOUT
        delay = 0.005
        while True:
            try:
                with self._errors("list the container's processes"):
                    top = api.top(info["Id"])
            except PiSandboxError:
                return  # it is no longer running; the caller's next step reports that
            titles = top.get("Titles") or []
            if "PID" not in titles or "CMD" not in titles:
                return
            pid_column, command_column = titles.index("PID"), titles.index("CMD")
            # Process 1 (docker-init) names the entrypoint in its arguments for
            # good, and until it has started its child it is the only process.
            children = [row for row in top.get("Processes") or [] if row[pid_column] != init_pid]
            if children and not any(marker in row[command_column] for row in children):
                return
            if time.monotonic() > deadline:
                logger.debug("the entrypoint %s of container %s is still running", marker, info["Id"][:12])
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _log_tail(self, api: Any, container_id: str | None, secrets: SecretMaterial | None) -> str:
        if container_id is None:
            return ""
        try:
            raw = api.logs(container_id, stdout=True, stderr=True, tail=_LOG_TAIL_LINES)
        except Exception:  # the log tail only decorates another error
            logger.debug("could not read the log tail of container %s", container_id[:12], exc_info=True)
            return ""
        return redact(raw.decode("utf-8", "replace"), secrets).rstrip()

    def _roll_back(
        self,
        api: Any,
        container_id: str | None,
        lock: _secretfiles.FolderLock | None,
        created_dirs: list[Path],
    ) -> None:
        """Remove what a failed create made: container, secrets folder, new data folders."""
        if container_id is not None:
            try:
                api.remove_container(container_id, v=True, force=True)
            except docker.errors.NotFound:
                pass
            except Exception:
                logger.warning(
                    "could not remove container %s after a failed create",
                    container_id[:12],
                    exc_info=True,
                    extra={"pi_sandbox.container_id": container_id},
                )
        if lock is not None:
            shutil.rmtree(lock.path, ignore_errors=True)
        for path in reversed(created_dirs):
            shutil.rmtree(path, ignore_errors=True)

    # Lookups

    def _filters(self, session_id: str | None = None) -> dict[str, list[str]]:
        labels = [f"{LABEL_MANAGED}=1", f"{LABEL_PROVIDER}={self.name}", f"{LABEL_OWNER}={self._owner}"]
        if session_id is not None:
            labels.append(f"{LABEL_SESSION_ID}={session_id}")
        return {"label": labels}

    def _is_ours(self, labels: Mapping[str, str]) -> bool:
        return (
            labels.get(LABEL_MANAGED) == "1"
            and labels.get(LABEL_PROVIDER) == self.name
            and labels.get(LABEL_OWNER) == self._owner
            and LABEL_SESSION_ID in labels
        )

    def get(self, provider_id: str) -> DockerSandbox:
        """Return the sandbox whose container has this id (or name).

        Raises:
            SandboxNotFoundError: No container of this provider's owner has it.
        """
        not_found = f"no sandbox of owner {self._owner!r} has provider id {provider_id!r}"
        if not isinstance(provider_id, str) or not provider_id.strip():
            raise SandboxNotFoundError(not_found)
        api = self._api()
        try:
            with self._errors("inspect the container", repr(provider_id)):
                info = api.inspect_container(provider_id)
        except SandboxNotFoundError:
            raise SandboxNotFoundError(not_found) from None
        if not self._is_ours(info["Config"].get("Labels") or {}):
            raise SandboxNotFoundError(not_found)
        return DockerSandbox(self, info)

    def find(self, session_id: str) -> DockerSandbox | None:
        """Return the sandbox of ``session_id`` made by this provider's owner, or None."""
        validate_session_id(session_id)
        api = self._api()
        with self._errors("list containers"):
            rows = api.containers(all=True, filters=self._filters(session_id))
        for row in rows:
            try:
                return self.get(row["Id"])
            except SandboxNotFoundError:
                continue  # removed since the listing
        return None

    def list(self) -> list[SandboxInfo]:
        """List this owner's sandboxes, from the engine's container labels."""
        api = self._api()
        with self._errors("list containers"):
            rows = api.containers(all=True, filters=self._filters())
        infos = []
        for row in rows:
            labels = row.get("Labels") or {}
            if not self._is_ours(labels):
                continue
            engine_status = row.get("State", "")
            if engine_status in {"exited", "dead"}:
                # Only the full record distinguishes a stop from a crash or an OOM kill.
                try:
                    with self._errors("inspect the container"):
                        state = ContainerState.from_inspect(api.inspect_container(row["Id"])["State"])
                except SandboxNotFoundError:
                    continue
            else:
                state = ContainerState.from_inspect({"Status": engine_status})
            created = row.get("Created")
            infos.append(
                SandboxInfo(
                    session_id=labels[LABEL_SESSION_ID],
                    provider_id=row["Id"],
                    provider=self.name,
                    status=state.status,
                    image=row.get("Image"),
                    created_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
                    labels=dict(labels),
                )
            )
        return infos

    # Cleanup

    def cleanup(self) -> CleanupReport:
        """Remove this owner's ended containers and every abandoned secrets folder.

        Removes containers that exited, died, or were created but never started
        by a process that is gone. Then removes each folder under the secrets
        root, of any owner, that no container of the project uses and no process
        holds: for example one left by a process killed during create. Never
        touches a container without this owner's labels.
        """
        api = self._api()
        removed = 0
        secret_dirs_removed = 0

        with self._errors("list containers"):
            rows = api.containers(all=True, filters=self._filters())
        for row in rows:
            if row.get("State") not in {"exited", "dead", "created"}:
                continue
            folder = _secrets_source(row)
            lock = _secretfiles.lock_folder(folder, blocking=False) if folder else None
            if folder is not None and lock is None and folder.exists():
                continue  # a create or resume in another process is using it
            try:
                with self._errors("remove the container"):
                    api.remove_container(row["Id"], v=True, force=True)
                removed += 1
                logger.info(
                    "removed ended sandbox container %s of session %s",
                    row["Id"][:12],
                    (row.get("Labels") or {}).get(LABEL_SESSION_ID),
                    extra={"pi_sandbox.container_id": row["Id"]},
                )
            except PiSandboxError:
                logger.warning("could not remove container %s", row["Id"][:12], exc_info=True)
            finally:
                if lock is not None:
                    lock.release()
            if folder is not None and _secretfiles.remove_folder(folder, blocking=False):
                secret_dirs_removed += 1

        secret_dirs_removed += self._remove_orphan_folders(api)
        if removed or secret_dirs_removed:
            logger.info("cleanup removed %d sandboxes and %d secrets folders", removed, secret_dirs_removed)
        return CleanupReport(sandboxes_removed=removed, secret_dirs_removed=secret_dirs_removed)

    def _remove_orphan_folders(self, api: Any) -> int:
        root = self._secrets_root
        if not root.is_dir():
            return 0
        with self._errors("list containers"):
            rows = api.containers(
                all=True, filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_PROVIDER}={self.name}"]}
            )
        in_use = {
            ((row.get("Labels") or {}).get(LABEL_OWNER), (row.get("Labels") or {}).get(LABEL_SESSION_ID))
            for row in rows
        }
        sources = {_secrets_source(row) for row in rows}

        removed = 0
        for entry in _folders_under(root):
            parsed = _secretfiles.parse_folder_name(entry.name)
            if parsed is None:
                continue
            owner, session_id, temporary = parsed
            if not temporary and ((owner, session_id) in in_use or entry in sources):
                continue
            # Locked folders belong to a create in progress in some process.
            if _secretfiles.remove_folder(entry, blocking=False):
                removed += 1
                logger.info(
                    "removed abandoned secrets folder of session %s (owner %s)",
                    session_id,
                    owner,
                    extra={"pi_sandbox.session_id": session_id},
                )
        return removed


# Errors inside create that keep their type; every other exception becomes a
# SandboxFailedError that carries the container's last output.
_PASSED_THROUGH: Final = (
    SandboxFailedError,
    SandboxExistsError,
    ContainerNameTakenError,
    ProviderUnavailableError,
    InvalidSpecError,
)


def _folders_under(root: Path) -> Iterator[Path]:
    try:
        yield from (entry for entry in root.iterdir() if entry.is_dir() and not entry.is_symlink())
    except FileNotFoundError:
        return


def _secrets_source(row: Mapping[str, Any]) -> Path | None:
    for mount in row.get("Mounts") or []:
        if mount.get("Destination") == SECRETS_MOUNT and mount.get("Source"):
            return Path(mount["Source"])
    return None


def _image_hint(image: str) -> str:
    return (
        "build it (the default image: `python3 -m nox -s image`), "
        f"or load it with `docker load` or `docker pull {image}` where a registry is reachable"
    )


def _first_line(text: str, limit: int = 200) -> str:
    """Return the first line of an engine message, shortened, for a one-line error."""
    line = text.strip().splitlines()[0] if text.strip() else "no reason given"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_tiers(tiers: Mapping[ResourceTier | str, Resources] | None) -> dict[ResourceTier, Resources]:
    result = {}
    for key, value in (tiers or {}).items():
        try:
            tier = key if isinstance(key, ResourceTier) else ResourceTier(str(key).lower())
        except ValueError:
            names = ", ".join(t.value for t in ResourceTier)
            msg = f"tiers key {key!r} must be a ResourceTier ({names})"
            raise ValueError(msg) from None
        if not isinstance(value, Resources):
            msg = f"tiers[{tier.value!r}] must be a Resources, got {type(value).__name__}"
            raise TypeError(msg)
        result[tier] = value
    return result


def _check_extra_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    result = dict(labels or {})
    for key, value in result.items():
        if not isinstance(key, str) or not LABEL_KEY_PATTERN.fullmatch(key):
            msg = f"extra_labels key {key!r} must be lower-case letters, digits, '.' and '-'"
            raise ValueError(msg)
        if key in PROVIDER_LABEL_KEYS:
            msg = f"extra_labels key {key!r} is set by the provider itself"
            raise ValueError(msg)
        if not isinstance(value, str):
            msg = f"extra_labels[{key!r}] must be a string"
            raise TypeError(msg)
    return result


def _check_secrets_outside_spec(spec: SessionSpec, secrets: SecretMaterial) -> None:
    """Reject a spec whose env, labels or command contain a secret value.

    Values of 8 bytes or more are searched as substrings, shorter ones must
    match a whole field, so that a short secret such as ``"1"`` does not match
    everywhere.
    """
    fields = [(f"env[{name!r}]", value) for name, value in spec.env.items()]
    fields += [(f"labels[{key!r}]", value) for key, value in spec.labels.items()]
    fields += [(f"command[{index}]", arg) for index, arg in enumerate(spec.command)]
    for secret_name, secret in secrets.items():
        text = secret.reveal().decode("utf-8", "replace")
        for field, value in fields:
            if (len(text) >= 8 and text in value) or text == value:
                raise InvalidSpecError(
                    field,
                    f"contains the value of secret {secret_name}; pass secrets only as secrets, "
                    "never in env, labels or the command",
                )


def _check_mount_sources(spec: SessionSpec) -> None:
    for index, mount in enumerate(spec.mounts):
        if not mount.source.exists():
            raise InvalidSpecError(
                f"mounts[{index}].source",
                f"{str(mount.source)!r} does not exist; create it first (missing sources are never created)",
            )


def _check_capabilities(names: tuple[str, ...]) -> None:
    for index, name in enumerate(names):
        bare = name.upper().removeprefix("CAP_") if isinstance(name, str) else ""
        if not bare or not set(bare) <= _CAPABILITY_NAME:
            raise InvalidSpecError(
                f"hardening.add_capabilities[{index}]",
                f"{name!r} must be a capability name such as NET_BIND_SERVICE",
            )


def _make_data_dirs(data_dirs: list[_DataDir], user: str, created: list[Path]) -> None:
    """Create the missing per-session folders, appending each to ``created`` for a rollback."""
    uid_text, _, gid_text = user.partition(":")
    for data_dir in data_dirs:
        if not data_dir.default or data_dir.path.exists():
            continue
        data_dir.path.parent.mkdir(parents=True, exist_ok=True)
        data_dir.path.mkdir(mode=0o750)
        created.append(data_dir.path)
        # As root, hand the folder to the sandbox's user, who must write in it.
        if os.geteuid() == 0 and uid_text.isdigit():
            os.chown(data_dir.path, int(uid_text), int(gid_text) if gid_text.isdigit() else -1)
