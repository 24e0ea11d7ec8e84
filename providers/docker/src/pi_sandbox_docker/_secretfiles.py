"""The per-session secrets folder on the host, bind-mounted read-only at ``/run/secrets``.

A folder contains one file per secret under an opaque name (``s-0``, ``s-1``, ...)
and a ``manifest`` with one ``ENV_NAME<TAB>s-N`` line per secret, which the
image's entrypoint reads. Folders live under one private root folder per host
user, on a memory-backed filesystem where one exists, and are named
``<owner>.<session id>`` so that `cleanup` can match them against containers.

Every operation on a session's folder holds an exclusive ``flock`` on it. A
process that dies mid-create releases its lock with it, which is how cleanup
tells an abandoned folder from one whose container is about to be made.

This module does not import the docker SDK.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets as random_tokens
import shutil
from pathlib import Path
from typing import Final

import attrs

from pi_sandbox import ProviderUnavailableError, SandboxExistsError, SecretMaterial

__all__ = [
    "DEFAULT_SECRETS_GID",
    "MANIFEST",
    "FolderLock",
    "SecretsAccess",
    "choose_access",
    "create_folder",
    "default_root",
    "ensure_root",
    "folder_name",
    "lock_folder",
    "open_folder",
    "parse_folder_name",
    "read_material",
    "remove_folder",
    "replace_contents",
]

logger = logging.getLogger("pi_sandbox.docker")

# The group that secret files get when the host process runs as root and the
# sandbox's user is given by name, so the files cannot belong to its uid. The
# number only has to be free inside the image. On the host, the private root
# folder (mode 0700) keeps every other user out whatever the group.
DEFAULT_SECRETS_GID: Final = 47000

MANIFEST: Final = "manifest"
TEMP_PREFIX: Final = ".tmp-"
SECRET_FILE_PATTERN: Final = re.compile(r"s-([0-9]+)")
OWNER_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SESSION_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MEMORY_FILESYSTEMS: Final = frozenset({"tmpfs", "ramfs"})


@attrs.frozen
class SecretsAccess:
    """The ownership and modes that decide who may read a sandbox's secret files.

    Attributes:
        kind: ``"owner"``: the files belong to the sandbox's uid, mode 0400, so
            no other uid in the container reads them. ``"group"``: the files
            belong to the host process's uid and to ``gid``, mode 0440, and the
            container gets ``gid`` as a supplementary group. Docker also gives
            that group to every ``docker exec`` process, whatever its uid.
        uid: The files' owner.
        gid: The files' group.
    """

    kind: str
    uid: int
    gid: int

    @property
    def file_mode(self) -> int:
        """The permission bits of each secret file and the manifest."""
        return 0o400 if self.kind == "owner" else 0o440

    @property
    def dir_mode(self) -> int:
        """The permission bits of the session's folder."""
        return 0o700 if self.kind == "owner" else 0o750

    @property
    def group_add(self) -> int | None:
        """The supplementary group the container needs, or None."""
        return self.gid if self.kind == "group" else None

    def to_label(self) -> str:
        """Return the label value that records this access, for example ``owner:1000:47000``."""
        return f"{self.kind}:{self.uid}:{self.gid}"

    @classmethod
    def from_label(cls, value: str) -> SecretsAccess:
        """Parse a value made by `to_label`.

        Raises:
            ValueError: ``value`` is not ``owner|group:<uid>:<gid>``.
        """
        kind, _, ids = value.partition(":")
        uid, _, gid = ids.partition(":")
        if kind not in {"owner", "group"} or not uid.isdigit() or not gid.isdigit():
            msg = f"invalid secrets access label {value!r}; expected owner|group:<uid>:<gid>"
            raise ValueError(msg)
        return cls(kind, int(uid), int(gid))


def choose_access(user: str, secrets_gid: int | None) -> SecretsAccess:
    """Decide how the sandbox user ``user`` (``uid[:gid]`` or a name) reads its secrets.

    Files can belong to the sandbox's uid when this process may give them away
    (it runs as root) or already has that uid. Otherwise, and for a user given by
    name, whose uid is defined only inside the image, they are shared through a
    group.
    """
    host_uid = os.geteuid()
    if secrets_gid is not None:
        gid = secrets_gid
    elif host_uid == 0:
        gid = DEFAULT_SECRETS_GID
    else:
        gid = os.getegid()

    uid_text = user.partition(":")[0]
    if uid_text.isdigit() and (host_uid == 0 or int(uid_text) == host_uid):
        return SecretsAccess("owner", int(uid_text), gid)
    return SecretsAccess("group", host_uid, gid)


def default_root(state_dir: Path) -> Path:
    """Return the default root folder: on ``/dev/shm`` when it is memory-backed, else under ``state_dir``."""
    shm = Path("/dev/shm")  # noqa: S108 - a fixed system path, checked below
    if _is_memory_filesystem(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm / f"pi-sandbox-secrets-{os.geteuid()}"
    return state_dir / "secrets"


def _is_memory_filesystem(path: Path) -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text()
    except OSError:
        return False
    filesystem = None
    for line in mounts.splitlines():
        fields = line.split()
        # The last mount on a path is the visible one.
        if len(fields) >= 3 and fields[1] == str(path):
            filesystem = fields[2]
    return filesystem in _MEMORY_FILESYSTEMS


def ensure_root(root: Path) -> Path:
    """Create ``root`` (mode 0700) if needed and check that it is private to this user.

    Raises:
        ProviderUnavailableError: ``root`` is a symbolic link, not a folder, not
            owned by this process's uid, or open to group or others.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)

    info = root.lstat()
    problem = None
    if root.is_symlink() or not root.is_dir():
        problem = "is not a folder (or is a symbolic link)"
    elif info.st_uid != os.geteuid():
        problem = f"belongs to uid {info.st_uid}, not to this process's uid {os.geteuid()}"
    elif info.st_mode & 0o077:
        problem = f"has mode {info.st_mode & 0o777:04o}; it must be 0700"
    if problem:
        msg = (
            f"the secrets root folder {root} {problem}; remove it so that pi-sandbox can "
            "create it again, or pass another secrets_dir"
        )
        raise ProviderUnavailableError(msg)
    return root


def folder_name(owner: str, session_id: str) -> str:
    """Return the folder name of a session's secrets: ``<owner>.<session id>``."""
    return f"{owner}.{session_id}"


def parse_folder_name(name: str) -> tuple[str, str, bool] | None:
    """Return ``(owner, session id, is_temporary)`` for a folder name, or None if it is not one."""
    temporary = name.startswith(TEMP_PREFIX)
    if temporary:
        # .tmp-<owner>.<session id>.<random>
        name = name.removeprefix(TEMP_PREFIX).rpartition(".")[0]
    owner, dot, session_id = name.partition(".")
    if not dot or not OWNER_PATTERN.fullmatch(owner) or not _SESSION_PATTERN.fullmatch(session_id):
        return None
    return owner, session_id, temporary


class FolderLock:
    """An exclusive ``flock`` on a secrets folder, held through an open descriptor.

    The descriptor also serves for every file operation inside the folder, so a
    folder renamed or replaced meanwhile cannot redirect them.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def release(self) -> None:
        """Close the descriptor, which releases the lock; calling it twice is harmless."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_folder(path: Path, *, blocking: bool = True) -> FolderLock | None:
    """Open and lock the folder ``path``.

    Returns:
        The lock, or None when ``path`` does not exist, or when ``blocking`` is
        false and another process holds the lock.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return FolderLock(fd, path)


def create_folder(
    root: Path, owner: str, session_id: str, material: SecretMaterial, access: SecretsAccess
) -> FolderLock:
    """Write a new secrets folder for a session and return it locked.

    The files are written in a temporary folder that is renamed into place when
    complete, so the final name never shows a partial set. The caller keeps the
    lock until the container that mounts the folder exists.

    Raises:
        SandboxExistsError: Another process has the session's folder locked.
    """
    final = root / folder_name(owner, session_id)
    orphan = lock_folder(final, blocking=False)
    if orphan is None and final.exists():
        msg = f"the secrets folder of session {session_id!r} is in use by another process creating it"
        raise SandboxExistsError(msg)
    if orphan is not None:
        # Left by a process that died before its container existed; the caller
        # has checked that no container uses it.
        with orphan:
            logger.info("removing the abandoned secrets folder of session %s", session_id)
            shutil.rmtree(final)

    temporary = root / f"{TEMP_PREFIX}{folder_name(owner, session_id)}.{random_tokens.token_hex(4)}"
    temporary.mkdir(mode=0o700)
    lock = lock_folder(temporary)
    if lock is None:  # pragma: no cover - removed between mkdir and open by someone else
        msg = f"the temporary secrets folder {temporary} disappeared while it was being written"
        raise ProviderUnavailableError(msg)
    try:
        replace_contents(lock, material, access)
        os.fchmod(lock.fd, access.dir_mode)
        _chown(lock.fd, access)
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        lock.release()
        raise
    lock.path = final
    return lock


def open_folder(path: Path, access: SecretsAccess) -> tuple[FolderLock, bool]:
    """Lock a session's existing secrets folder, or make an empty one at ``path``.

    A folder can vanish while its container exists: ``/dev/shm`` is emptied
    when the host restarts. The engine cannot start a container whose bind
    mount source is missing, so resume makes the folder again.

    Returns:
        The lock, and whether the folder was made (it then has no manifest yet).
    """
    while True:
        lock = lock_folder(path)
        if lock is not None:
            return lock, False
        ensure_root(path.parent)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by another process meanwhile; lock that one
        lock = lock_folder(path)
        if lock is None:  # pragma: no cover - removed again before it could be locked
            continue
        os.fchmod(lock.fd, access.dir_mode)
        _chown(lock.fd, access)
        return lock, True


def replace_contents(lock: FolderLock, material: SecretMaterial, access: SecretsAccess) -> None:
    """Replace the secrets in a locked folder with ``material``, in place.

    The folder itself stays, because a running container's bind mount refers
    to it. Each new value goes to a file name the current manifest does not
    use, written under a temporary name and renamed. Then the new manifest
    replaces the old one in a single rename, and the files it does not list
    are deleted. A reader therefore sees either the old set or the new one,
    never a mix. An empty ``material`` leaves only an empty manifest.
    """
    existing = set(os.listdir(lock.fd))
    used = {int(match.group(1)) for name in existing if (match := SECRET_FILE_PATTERN.fullmatch(name))}

    lines: list[str] = []
    listed = {MANIFEST}
    index = 0
    for env_name, value in material.items():
        while index in used:
            index += 1
        file_name = f"s-{index}"
        index += 1
        _write_file(lock.fd, file_name, value.reveal(), access)
        lines.append(f"{env_name}\t{file_name}\n")
        listed.add(file_name)
    _write_file(lock.fd, MANIFEST, "".join(lines).encode(), access)

    for name in set(os.listdir(lock.fd)) - listed:
        os.unlink(name, dir_fd=lock.fd)


def _write_file(dir_fd: int, name: str, data: bytes, access: SecretsAccess) -> None:
    temporary = f"{TEMP_PREFIX}{name}.{random_tokens.token_hex(4)}"
    # Created 0600 and only then handed over, so no moment exists in which the
    # file is open to more than this process.
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, access.file_mode)
        _chown(fd, access)
    except BaseException:
        os.close(fd)
        os.unlink(temporary, dir_fd=dir_fd)
        raise
    os.close(fd)
    os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _chown(fd: int, access: SecretsAccess) -> None:
    info = os.fstat(fd)
    if (info.st_uid, info.st_gid) == (access.uid, access.gid):
        return
    try:
        os.fchown(fd, access.uid, access.gid)
    except PermissionError:
        msg = (
            f"cannot give the secret files owner {access.uid} and group {access.gid} as uid "
            f"{os.geteuid()}: run as root, run the sandbox as this uid, or pass a secrets_gid "
            "this user belongs to"
        )
        raise ProviderUnavailableError(msg) from None


def read_material(path: Path) -> SecretMaterial | None:
    """Return the secrets stored in the folder ``path``, or None if they cannot be read.

    Used to scrub the values from the sandbox's output.
    """
    try:
        manifest = (path / MANIFEST).read_text()
        values = {}
        for line in manifest.splitlines():
            env_name, _, file_name = line.partition("\t")
            if env_name and SECRET_FILE_PATTERN.fullmatch(file_name):
                values[env_name] = (path / file_name).read_bytes()
        return SecretMaterial(values)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def remove_folder(path: Path, *, blocking: bool = True) -> bool:
    """Delete a secrets folder under its lock.

    Returns:
        Whether the folder was removed; False when it did not exist or, with
        ``blocking`` false, another process held it.
    """
    lock = lock_folder(path, blocking=blocking)
    if lock is None:
        return False
    with lock:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            return False
    return True
