"""Checks on secret names, kinds and values, run before anything is written."""

from __future__ import annotations

import re
from typing import Final

from .._errors import InvalidSecretError
from .._secrets import MAX_SECRET_BYTES, SecretValue

__all__ = [
    "KIND_PATTERN",
    "SECRET_NAME_PATTERN",
    "validate_kind",
    "validate_secret_name",
    "validate_secret_value",
]

# A letter or digit, then letters, digits, '.', '_' or '-': 64 characters at most.
# Names appear in logs, error messages and the CLI, so they stay plain ASCII.
SECRET_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KIND_PATTERN: Final = SECRET_NAME_PATTERN


def validate_secret_name(name: object) -> str:
    """Return ``name`` if it is a valid secret name, else raise `InvalidSecretError`."""
    if not isinstance(name, str) or not SECRET_NAME_PATTERN.fullmatch(name):
        msg = (
            f"invalid secret name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
        raise InvalidSecretError(msg)
    return name


def validate_kind(kind: object) -> str | None:
    """Return ``kind`` if it is ``None`` or a valid kind label, else raise `InvalidSecretError`."""
    if kind is None:
        return None
    if not isinstance(kind, str) or not KIND_PATTERN.fullmatch(kind):
        msg = (
            f"invalid secret kind {kind!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, or None"
        )
        raise InvalidSecretError(msg)
    return kind


def validate_secret_value(name: str, value: object) -> bytes:
    """Return the bytes of a secret value, or raise `InvalidSecretError` naming the secret.

    A ``str`` is encoded as UTF-8. The value must be non-empty, contain no NUL
    byte (it could not travel in an environment variable) and be at most
    `MAX_SECRET_BYTES` long. The message never quotes the value.
    """
    if isinstance(value, SecretValue):
        data = value.reveal()
    elif isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        msg = f"value of secret {name!r} has type {type(value).__name__}; pass str, bytes or SecretValue"
        raise InvalidSecretError(msg)

    if not data:
        msg = f"value of secret {name!r} is empty; store a non-empty value or delete the secret"
        raise InvalidSecretError(msg)
    if b"\x00" in data:
        msg = f"value of secret {name!r} contains a NUL byte, which cannot travel in an environment variable"
        raise InvalidSecretError(msg)
    if len(data) > MAX_SECRET_BYTES:
        msg = (
            f"value of secret {name!r} is {len(data)} bytes long; the maximum is "
            f"{MAX_SECRET_BYTES} bytes (500 KiB)"
        )
        raise InvalidSecretError(msg)
    return data
