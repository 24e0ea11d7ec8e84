"""Versioned AES-256 keys for the secret store, and the files and variables they come from."""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NoReturn

import attrs
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._errors import KeyConfigurationError

__all__ = [
    "ENCRYPTION_KEY_ENV",
    "ENCRYPTION_KEY_FILE_ENV",
    "KEY_BYTES",
    "KeyRing",
]

ENCRYPTION_KEY_ENV: Final = "PI_SANDBOX_ENCRYPTION_KEY"
ENCRYPTION_KEY_FILE_ENV: Final = "PI_SANDBOX_ENCRYPTION_KEY_FILE"
KEY_BYTES: Final = 32
# Key versions are stored in a 32-bit signed integer column.
MAX_KEY_VERSION: Final = 2**31 - 1

_VERSIONED_ENTRY: Final = re.compile(r"(?P<version>[0-9]+):(?P<key>.*)")
_URLSAFE_BASE64: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_KEY_FILE_HEADER: Final = (
    "# pi-sandbox secret store keys, one VERSION:BASE64 entry per line.\n"
    "# The highest version encrypts new secrets; the others only decrypt.\n"
)


def _check_keys(keys: Mapping[int, bytes]) -> dict[int, bytes]:
    checked: dict[int, bytes] = {}
    for version, key in keys.items():
        if isinstance(version, bool) or not isinstance(version, int):
            msg = f"key version {version!r} is not an integer; use 1 to {MAX_KEY_VERSION}"
            raise KeyConfigurationError(msg)
        if not 1 <= version <= MAX_KEY_VERSION:
            msg = f"key version {version} is out of range; use 1 to {MAX_KEY_VERSION}"
            raise KeyConfigurationError(msg)
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            length = len(key) if isinstance(key, bytes) else type(key).__name__
            msg = f"key version {version} is {length} bytes; a key must be exactly 32 bytes"
            raise KeyConfigurationError(msg)
        checked[version] = key
    if not checked:
        msg = "a key ring needs at least one key"
        raise KeyConfigurationError(msg)
    return checked


@attrs.frozen(repr=False, eq=False)
class KeyRing:
    """Versioned 32-byte AES-256-GCM keys; the highest version is the primary.

    The primary key encrypts every new or updated secret. The other keys only
    decrypt rows written before a rotation. `repr` shows the versions, never
    the key bytes, and a key ring cannot be pickled.

    Args:
        keys: Key version (1 to 2**31 - 1) to the 32 key bytes.
    """

    _keys: dict[int, bytes] = attrs.field(alias="keys", converter=_check_keys)
    _ciphers: dict[int, AESGCM] = attrs.field(init=False)

    @_ciphers.default
    def _build_ciphers(self) -> dict[int, AESGCM]:
        return {version: AESGCM(key) for version, key in self._keys.items()}

    @classmethod
    def generate(cls, version: int = 1) -> KeyRing:
        """Create a key ring holding one new random key under ``version``."""
        return cls({version: secrets.token_bytes(KEY_BYTES)})

    @classmethod
    def from_string(cls, text: str, *, source: str = ENCRYPTION_KEY_ENV) -> KeyRing:
        """Parse keys written as ``BASE64`` (version 1) or ``VERSION:BASE64`` entries.

        Entries are separated by commas or line breaks; blank lines and lines
        starting with ``#`` are ignored. Each key is standard or URL-safe base64
        of exactly 32 bytes. Error messages name ``source`` and the entry's
        position, never its text.

        Raises:
            KeyConfigurationError: An entry is malformed, a version repeats, or
                there is no entry.
        """
        entries = [
            entry.strip()
            for line in text.splitlines()
            if not line.strip().startswith("#")
            for entry in line.split(",")
            if entry.strip()
        ]
        if not entries:
            msg = f"{source} contains no key; write BASE64 or VERSION:BASE64 entries"
            raise KeyConfigurationError(msg)

        keys: dict[int, bytes] = {}
        for position, entry in enumerate(entries, start=1):
            version, key = _parse_entry(entry, position, source, single=len(entries) == 1)
            if version in keys:
                msg = f"{source} lists key version {version} twice; keep one entry per version"
                raise KeyConfigurationError(msg)
            keys[version] = key
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Read a key file in the `from_string` format.

        Raises:
            KeyConfigurationError: The file is missing, unreadable, malformed,
                or group or others may access it.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            msg = f"key file {path} does not exist"
            raise KeyConfigurationError(msg) from None
        except OSError as error:
            msg = f"cannot open key file {path}: {error.strerror}"
            raise KeyConfigurationError(msg) from None

        with os.fdopen(fd, "r", encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                msg = f"key file {path} is not a regular file"
                raise KeyConfigurationError(msg)
            # Windows has no POSIX permission bits to check.
            if os.name == "posix" and mode & 0o077:
                msg = (
                    f"key file {path} has mode {stat.S_IMODE(mode):04o}, which lets group or "
                    f"others access it; run `chmod 600 {path}`"
                )
                raise KeyConfigurationError(msg)
            try:
                text = file.read()
            except UnicodeDecodeError:
                msg = f"key file {path} is not UTF-8 text; write VERSION:BASE64 entries"
                raise KeyConfigurationError(msg) from None
        return cls.from_string(text, source=f"key file {path}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> KeyRing | None:
        """Load keys from ``PI_SANDBOX_ENCRYPTION_KEY`` or ``PI_SANDBOX_ENCRYPTION_KEY_FILE``.

        Returns ``None`` when neither variable is set (or both are empty).

        Raises:
            KeyConfigurationError: Both variables are set, or the keys are invalid.
        """
        environ = os.environ if environ is None else environ
        inline = environ.get(ENCRYPTION_KEY_ENV, "").strip()
        file_name = environ.get(ENCRYPTION_KEY_FILE_ENV, "").strip()
        if inline and file_name:
            msg = f"both {ENCRYPTION_KEY_ENV} and {ENCRYPTION_KEY_FILE_ENV} are set; unset one of them"
            raise KeyConfigurationError(msg)
        if inline:
            return cls.from_string(inline, source=ENCRYPTION_KEY_ENV)
        if file_name:
            return cls.from_file(Path(file_name).expanduser())
        return None

    @property
    def versions(self) -> tuple[int, ...]:
        """The key versions, highest (the primary) first."""
        return tuple(sorted(self._keys, reverse=True))

    @property
    def primary_version(self) -> int:
        """The version of the key that encrypts new secrets."""
        return max(self._keys)

    def __contains__(self, version: object) -> bool:
        return version in self._keys

    def with_new_key(self, key: bytes | None = None) -> KeyRing:
        """Return a copy with one more key, which becomes the primary.

        Args:
            key: The 32 new key bytes; random bytes when omitted.
        """
        new_key = secrets.token_bytes(KEY_BYTES) if key is None else key
        return KeyRing({**self._keys, self.primary_version + 1: new_key})

    def without(self, version: int) -> KeyRing:
        """Return a copy without the key ``version``, which must not be the primary.

        Raises:
            KeyConfigurationError: ``version`` is missing or is the primary.
        """
        if version not in self._keys:
            msg = f"key version {version} is not in the key ring (versions {list(self.versions)})"
            raise KeyConfigurationError(msg)
        if version == self.primary_version:
            msg = (
                f"key version {version} is the primary key and cannot be removed; "
                "add a newer key and rotate first"
            )
            raise KeyConfigurationError(msg)
        return KeyRing({v: k for v, k in self._keys.items() if v != version})

    def export(self) -> str:
        """Return every key as ``VERSION:BASE64`` entries joined by commas, primary first.

        The result reveals the keys. It is the format that
        ``PI_SANDBOX_ENCRYPTION_KEY`` and key files accept.
        """
        return ",".join(
            f"{version}:{base64.b64encode(self._keys[version]).decode('ascii')}" for version in self.versions
        )

    def write_file(self, path: str | os.PathLike[str], *, replace: bool = False) -> Path:
        """Write the keys to ``path`` with mode 0600, all at once.

        The keys go to a new temporary file (created with ``O_EXCL``, mode 0600)
        that is then linked or renamed into place, so no reader ever sees a
        partial file. Missing parent folders are created with mode 0700.

        Args:
            path: The key file to write.
            replace: Replace an existing file; when false, an existing file is an error.

        Returns:
            The path written.

        Raises:
            KeyConfigurationError: The file exists and ``replace`` is false, or
                writing failed.
        """
        path = Path(path)
        try:
            _write_private_file(path, self._file_content(), replace=replace)
        except FileExistsError:
            msg = f"key file {path} already exists; pass replace=True to overwrite it"
            raise KeyConfigurationError(msg) from None
        except OSError as error:
            msg = f"cannot write key file {path}: {error.strerror}"
            raise KeyConfigurationError(msg) from None
        return path

    def _file_content(self) -> bytes:
        """Return the key file text for these keys: a comment, then one entry per line."""
        return (_KEY_FILE_HEADER + self.export().replace(",", "\n") + "\n").encode("ascii")

    def _cipher(self, version: int) -> AESGCM | None:
        """Return the AES-GCM cipher for ``version``, or ``None`` when the key is missing."""
        return self._ciphers.get(version)

    def __repr__(self) -> str:
        return f"KeyRing(versions={list(self.versions)!r}, primary={self.primary_version})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        msg = "KeyRing cannot be pickled; pass KeyRing.export() through a private channel"
        raise TypeError(msg)


def _parse_entry(entry: str, position: int, source: str, *, single: bool) -> tuple[int, bytes]:
    """Parse one ``VERSION:BASE64`` entry (or a bare ``BASE64`` when it is the only one)."""
    match = _VERSIONED_ENTRY.fullmatch(entry)
    if match:
        version = int(match["version"])
        encoded = match["key"].strip()
        where = f"entry {position} of {source} (key version {version})"
    elif single:
        version = 1
        encoded = entry
        where = f"{source}"
    else:
        msg = (
            f"entry {position} of {source} has no version; when there are several keys, "
            "write each as VERSION:BASE64"
        )
        raise KeyConfigurationError(msg)

    if not 1 <= version <= MAX_KEY_VERSION:
        msg = f"{where}: the version is out of range; use 1 to {MAX_KEY_VERSION}"
        raise KeyConfigurationError(msg)
    key = _decode_base64(encoded)
    if key is None:
        msg = f"{where} is not valid base64"
        raise KeyConfigurationError(msg)
    if len(key) != KEY_BYTES:
        msg = f"{where} decodes to {len(key)} bytes; a key must be exactly 32 bytes"
        raise KeyConfigurationError(msg)
    return version, key


def _decode_base64(encoded: str) -> bytes | None:
    """Decode standard or URL-safe base64, or return ``None`` if it is neither."""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    if _URLSAFE_BASE64.fullmatch(encoded):
        try:
            return base64.urlsafe_b64decode(encoded)
        except (binascii.Error, ValueError):
            return None
    return None


def _write_private_file(path: Path, content: bytes, *, replace: bool) -> None:
    """Write ``content`` to ``path`` through an exclusive 0600 temporary file.

    Raises:
        FileExistsError: ``path`` exists and ``replace`` is false.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            # link() fails if the target exists, and the target only appears
            # once its content is complete.
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk where the platform allows it."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
