"""What a sandbox should be: `SessionSpec` and the records it is made of."""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from ._errors import InvalidSpecError
from ._secrets import ENV_NAME_PATTERN

__all__ = [
    "DEFAULT_COMMAND",
    "SECRETS_MOUNT",
    "Hardening",
    "Mount",
    "ResourceTier",
    "Resources",
    "SessionSpec",
    "validate_session_id",
]

SESSION_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
LABEL_KEY_PATTERN: Final = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
NETWORK_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SECRETS_MOUNT: Final = "/run/secrets"
WORKSPACE_MOUNT: Final = "/workspace"
AGENT_DIR_MOUNT: Final = "/data/agent"
DEFAULT_COMMAND: Final = ("pi", "--mode", "rpc")
# Environment variables the provider sets itself; a spec may not override them.
PROVIDER_ENV_NAMES: Final = frozenset({"PI_SESSION_ID", "PI_SECRETS_DIR", "PI_CODING_AGENT_DIR"})
# Labels under this prefix belong to the provider (session id, owner, spec hash).
PROJECT_LABEL_PREFIX: Final = "dev.pi-sandbox."


def validate_session_id(session_id: object, field: str = "session_id") -> str:
    """Return ``session_id`` if it is 1 to 64 letters, digits, ``-`` or ``_``.

    Raises:
        InvalidSpecError: naming ``field`` and the rule.
    """
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
        msg = f"{session_id!r} must be 1 to 64 characters of letters, digits, '-' and '_'"
        raise InvalidSpecError(field, msg)
    return session_id


def _validate_container_path(path: object, field: str) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidSpecError(field, "must be a non-empty absolute path inside the sandbox")
    if "\x00" in path or "\n" in path:
        raise InvalidSpecError(field, f"{path!r} contains a NUL or newline character")
    if not path.startswith("/"):
        raise InvalidSpecError(field, f"{path!r} must be absolute (start with '/')")
    if posixpath.normpath(path) != path or path.startswith("//"):
        normal = posixpath.normpath(path)
        raise InvalidSpecError(field, f"{path!r} must be normalised; write {normal!r}")
    if path == "/":
        raise InvalidSpecError(field, "must not be the sandbox's root folder '/'")
    return path


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + "/")


class ResourceTier(enum.Enum):
    """Named resource sizes; providers map each to concrete limits."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"

    def resources(self) -> Resources:
        """Return the limits this tier stands for."""
        return _TIER_RESOURCES[self]


@attrs.frozen
class Resources:
    """Explicit limits: CPUs (fractional), memory in MiB and the maximum process count."""

    cpus: float = attrs.field(default=1.0)
    memory_mb: int = attrs.field(default=1024)
    pids: int = attrs.field(default=256)

    @cpus.validator
    def _check_cpus(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1024:
            raise InvalidSpecError("resources.cpus", f"{value!r} must be a number above 0, at most 1024")

    @memory_mb.validator
    def _check_memory(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 64:
            raise InvalidSpecError(
                "resources.memory_mb", f"{value!r} must be an integer of at least 64 (MiB)"
            )

    @pids.validator
    def _check_pids(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 16:
            raise InvalidSpecError("resources.pids", f"{value!r} must be an integer of at least 16")


_TIER_RESOURCES: Final = {
    ResourceTier.SMALL: Resources(cpus=1.0, memory_mb=1024, pids=256),
    ResourceTier.MEDIUM: Resources(cpus=2.0, memory_mb=4096, pids=512),
    ResourceTier.LARGE: Resources(cpus=4.0, memory_mb=8192, pids=1024),
}


def _to_resources(value: ResourceTier | Resources | str) -> Resources:
    if isinstance(value, Resources):
        return value
    if isinstance(value, ResourceTier):
        return value.resources()
    if isinstance(value, str):
        try:
            return ResourceTier(value.lower()).resources()
        except ValueError:
            pass
    names = ", ".join(tier.value for tier in ResourceTier)
    raise InvalidSpecError("resources", f"{value!r} must be a ResourceTier ({names}) or Resources")


# Typed converters: with the bare ``tuple`` builtin, or a generic one, mypy's
# attrs plugin cannot solve the element type and rejects
# SessionSpec(mounts=(Mount(...),)) in the caller's code.
def _to_mounts(value: Iterable[Mount]) -> tuple[Mount, ...]:
    return tuple(value)


def _to_names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Mount:
    """A host folder or file bind-mounted into the sandbox.

    Attributes:
        source: An existing host path; providers never create it.
        target: An absolute, normalised path inside the sandbox, not under ``/run/secrets``.
        read_only: Whether the sandbox may write through the mount.
    """

    source: Path = attrs.field(converter=Path)
    target: str
    read_only: bool = False


@attrs.frozen
class Hardening:
    """Security settings a provider applies to the sandbox.

    The defaults are the hardened ones; loosening any of them is a deliberate choice
    of the host application.

    Attributes:
        drop_capabilities: Drop every Linux capability except ``add_capabilities``.
        add_capabilities: Capabilities to keep (for images that need one).
        no_new_privileges: Forbid gaining privileges through setuid binaries.
        read_only_root: Mount the image's root filesystem read-only.
        runtime: An OCI runtime name such as ``runsc`` (gVisor), or None for the engine's default.
    """

    drop_capabilities: bool = True
    add_capabilities: tuple[str, ...] = attrs.field(default=(), converter=_to_names)
    no_new_privileges: bool = True
    read_only_root: bool = False
    runtime: str | None = None


def _freeze_mapping(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value or {})


def _to_command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InvalidSpecError("command", "must be a sequence of arguments, not one string")
    if not isinstance(value, list | tuple):
        raise InvalidSpecError("command", f"{value!r} must be a list or tuple of strings")
    return tuple(value)


@attrs.frozen(kw_only=True)
class SessionSpec:
    """What a sandbox for one session should be; validated when built.

    Attributes:
        session_id: 1 to 64 letters, digits, ``-`` and ``_``; one sandbox per id.
        image: The image to run, or None for the provider's configured default.
        command: The argv to run; pi's RPC mode by default.
        env: Non-secret environment variables. Secrets go through `SecretMaterial`.
        workspace: Host folder mounted at ``/workspace``; None for a per-session
            folder under the provider's state folder.
        agent_dir: Host folder mounted at ``/data/agent`` for pi's sessions; None for
            a per-session folder.
        mounts: Further bind mounts.
        resources: A `ResourceTier` or explicit `Resources`.
        network: ``"bridge"``, ``"none"``, ``"host"`` or a named network.
        user: The user inside the sandbox, as ``uid[:gid]`` or a name.
        labels: Extra labels; keys under ``dev.pi-sandbox.`` are reserved.
        hardening: Security settings; hardened by default.
    """

    session_id: str = attrs.field(validator=lambda _i, _a, v: validate_session_id(v))
    image: str | None = None
    command: tuple[str, ...] = attrs.field(default=DEFAULT_COMMAND, converter=_to_command)
    env: dict[str, str] = attrs.field(factory=dict, converter=_freeze_mapping)
    workspace: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    agent_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_to_mounts)
    resources: Resources = attrs.field(factory=ResourceTier.SMALL.resources, converter=_to_resources)
    network: str = "bridge"
    user: str = "1000:1000"
    labels: dict[str, str] = attrs.field(factory=dict, converter=_freeze_mapping)
    hardening: Hardening = attrs.field(factory=Hardening)

    def __attrs_post_init__(self) -> None:
        self._validate_image()
        self._validate_command()
        self._validate_env()
        self._validate_paths()
        self._validate_mounts()
        self._validate_network_and_user()
        self._validate_labels()

    def _validate_image(self) -> None:
        if self.image is not None and (not isinstance(self.image, str) or not self.image.strip()):
            raise InvalidSpecError("image", "must be a non-empty image reference or None")
        if self.image is not None and any(c.isspace() for c in self.image):
            raise InvalidSpecError("image", f"{self.image!r} must not contain whitespace")

    def _validate_command(self) -> None:
        if not self.command:
            raise InvalidSpecError("command", "must contain at least the program to run")
        for index, arg in enumerate(self.command):
            if not isinstance(arg, str) or "\x00" in arg:
                raise InvalidSpecError(f"command[{index}]", "must be a string without NUL characters")

    def _validate_env(self) -> None:
        for name, value in self.env.items():
            if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
                raise InvalidSpecError(
                    f"env[{name!r}]",
                    "names must be identifiers: letters, digits, '_', not starting with a digit",
                )
            if name in PROVIDER_ENV_NAMES:
                raise InvalidSpecError(f"env[{name!r}]", "is set by the provider and cannot be overridden")
            if not isinstance(value, str) or "\x00" in value:
                raise InvalidSpecError(f"env[{name!r}]", "values must be strings without NUL characters")

    def _validate_paths(self) -> None:
        for field in ("workspace", "agent_dir"):
            path = getattr(self, field)
            if path is not None and not path.is_absolute():
                raise InvalidSpecError(field, f"{str(path)!r} must be an absolute host path")

    def _validate_mounts(self) -> None:
        seen = {WORKSPACE_MOUNT: "workspace", AGENT_DIR_MOUNT: "agent_dir"}
        for index, mount in enumerate(self.mounts):
            field = f"mounts[{index}]"
            if not isinstance(mount, Mount):
                raise InvalidSpecError(field, f"{mount!r} must be a Mount")
            target = _validate_container_path(mount.target, f"{field}.target")
            if _under(target, SECRETS_MOUNT) or _under(SECRETS_MOUNT, target):
                raise InvalidSpecError(
                    f"{field}.target", f"{target!r} must not be on, above or under {SECRETS_MOUNT}"
                )
            if target in seen:
                raise InvalidSpecError(
                    f"{field}.target", f"{target!r} is already the target of {seen[target]}"
                )
            if not mount.source.is_absolute():
                raise InvalidSpecError(
                    f"{field}.source", f"{str(mount.source)!r} must be an absolute host path"
                )
            seen[target] = field

    def _validate_network_and_user(self) -> None:
        if not isinstance(self.network, str) or not NETWORK_PATTERN.fullmatch(self.network):
            raise InvalidSpecError(
                "network", f"{self.network!r} must be 'bridge', 'none', 'host' or a network name"
            )
        if not isinstance(self.user, str) or not re.fullmatch(
            r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?", self.user
        ):
            raise InvalidSpecError("user", f"{self.user!r} must be 'uid', 'uid:gid' or a user name")
        if self.user.split(":", 1)[0] in {"0", "root"}:
            raise InvalidSpecError("user", "must not be root; sandboxes run as a non-root user")

    def _validate_labels(self) -> None:
        for key, value in self.labels.items():
            field = f"labels[{key!r}]"
            if not isinstance(key, str) or not LABEL_KEY_PATTERN.fullmatch(key):
                raise InvalidSpecError(field, "keys must be lower-case letters, digits, '.' and '-'")
            if key.startswith(PROJECT_LABEL_PREFIX):
                raise InvalidSpecError(
                    field, f"keys under {PROJECT_LABEL_PREFIX!r} are reserved for the provider"
                )
            if not isinstance(value, str):
                raise InvalidSpecError(field, "values must be strings")

    def to_json(self) -> dict[str, Any]:
        """Return the spec as JSON-ready data, for hashing and for the host's records."""
        return {
            "session_id": self.session_id,
            "image": self.image,
            "command": list(self.command),
            "env": dict(sorted(self.env.items())),
            "workspace": str(self.workspace) if self.workspace else None,
            "agent_dir": str(self.agent_dir) if self.agent_dir else None,
            "mounts": [[str(m.source), m.target, m.read_only] for m in self.mounts],
            "resources": attrs.asdict(self.resources),
            "network": self.network,
            "user": self.user,
            "labels": dict(sorted(self.labels.items())),
            "hardening": attrs.asdict(self.hardening),
        }
