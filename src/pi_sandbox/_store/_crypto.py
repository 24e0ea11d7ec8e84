"""AES-256-GCM encryption of secret values, bound to the row that stores them."""

from __future__ import annotations

import os
import uuid
from typing import Final

import attrs
from cryptography.exceptions import InvalidTag

from .._errors import DecryptionError
from ._keyring import KeyRing

__all__ = ["NONCE_BYTES", "TAG_BYTES", "SealedValue", "associated_data", "open_value", "seal_value"]

NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
# Names the format of the associated data, so that a later format can never
# produce the same bytes as this one.
_ASSOCIATED_DATA_LABEL: Final = b"pi-sandbox secret row v1"


@attrs.frozen(repr=False)
class SealedValue:
    """One encrypted value as the store keeps it: key version, nonce, ciphertext and tag."""

    key_version: int
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"SealedValue(key_version={self.key_version}, ciphertext_bytes={len(self.ciphertext)})"


def associated_data(row_id: uuid.UUID, name: str, env_var: str, key_version: int) -> bytes:
    """Encode the row fields that a ciphertext is bound to.

    Every field is written as a 4-byte big-endian length followed by its
    bytes, so no two different tuples encode to the same bytes.
    """
    fields = (
        _ASSOCIATED_DATA_LABEL,
        row_id.bytes,
        name.encode("utf-8"),
        env_var.encode("utf-8"),
        key_version.to_bytes(4, "big"),
    )
    return b"".join(len(field).to_bytes(4, "big") + field for field in fields)


def seal_value(
    keyring: KeyRing, *, row_id: uuid.UUID, name: str, env_var: str, plaintext: bytes
) -> SealedValue:
    """Encrypt ``plaintext`` with the primary key and a fresh random 96-bit nonce."""
    version = keyring.primary_version
    cipher = keyring._cipher(version)
    # The primary version always has a key; this guards against a broken KeyRing.
    if cipher is None:
        msg = f"key ring has no cipher for its primary version {version}"
        raise RuntimeError(msg)

    nonce = os.urandom(NONCE_BYTES)
    ciphertext = cipher.encrypt(nonce, plaintext, associated_data(row_id, name, env_var, version))
    return SealedValue(key_version=version, nonce=nonce, ciphertext=ciphertext)


def open_value(keyring: KeyRing, *, row_id: uuid.UUID, name: str, env_var: str, sealed: SealedValue) -> bytes:
    """Decrypt and authenticate a stored value.

    Raises:
        DecryptionError: The key version is not in ``keyring``, or the
            authentication tag does not match (wrong key, altered bytes, or a
            ciphertext moved from another row). The error names the secret.
    """
    cipher = keyring._cipher(sealed.key_version)
    if cipher is None:
        msg = (
            f"secret {name!r} was encrypted with key version {sealed.key_version}, which the "
            f"key ring (versions {list(keyring.versions)}) does not contain; add that key to "
            "PI_SANDBOX_ENCRYPTION_KEY or the key file"
        )
        raise DecryptionError(msg, (name,))

    data = associated_data(row_id, name, env_var, sealed.key_version)
    try:
        return cipher.decrypt(sealed.nonce, sealed.ciphertext, data)
    except (InvalidTag, ValueError):
        # ValueError: a nonce of the wrong length, which only a damaged row has.
        msg = (
            f"secret {name!r} failed authentication with key version {sealed.key_version}: "
            "the key differs from the one that encrypted it, or the stored row was altered "
            "or copied from another row"
        )
        raise DecryptionError(msg, (name,)) from None
