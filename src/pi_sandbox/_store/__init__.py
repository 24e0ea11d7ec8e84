"""The encrypted secret store: AES-256-GCM values in SQLite or PostgreSQL, keys in a KeyRing."""

from __future__ import annotations

from ._database import SecretStoreError
from ._keyring import ENCRYPTION_KEY_ENV, ENCRYPTION_KEY_FILE_ENV, KeyRing
from ._open import DATABASE_URL_ENV, default_database_path, default_key_file, open_secret_store
from ._store import SecretRecord, SecretStore, SqlSecretStore

__all__ = [
    "DATABASE_URL_ENV",
    "ENCRYPTION_KEY_ENV",
    "ENCRYPTION_KEY_FILE_ENV",
    "KeyRing",
    "SecretRecord",
    "SecretStore",
    "SecretStoreError",
    "SqlSecretStore",
    "default_database_path",
    "default_key_file",
    "open_secret_store",
]
