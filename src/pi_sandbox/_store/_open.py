"""`open_secret_store`: pick the database and the keys from arguments, environment and defaults."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final, NoReturn

import platformdirs
from sqlalchemy import URL, Engine, make_url

from .._errors import KeyConfigurationError
from ._database import create_store_engine, describe_url
from ._keyring import ENCRYPTION_KEY_ENV, ENCRYPTION_KEY_FILE_ENV, KeyRing, _write_private_file
from ._schema import upgrade_schema
from ._store import SqlSecretStore, count_secrets

__all__ = [
    "DATABASE_URL_ENV",
    "default_database_path",
    "default_key_file",
    "open_secret_store",
]

logger = logging.getLogger("pi_sandbox.store")

DATABASE_URL_ENV: Final = "PI_SANDBOX_DATABASE_URL"
_APP_NAME: Final = "pi-sandbox"
_KEY_HELP: Final = (
    f"set {ENCRYPTION_KEY_ENV} to the base64 of 32 random bytes (for example the output of "
    '`python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"`), '
    f"set {ENCRYPTION_KEY_FILE_ENV} to a key file, or pass keyring=KeyRing(...)"
)


def default_database_path() -> Path:
    """Return the embedded SQLite database's path in the user's data folder."""
    return Path(platformdirs.user_data_dir(_APP_NAME, appauthor=False)) / "secrets.db"


def default_key_file() -> Path:
    """Return the key file that the embedded database uses, in the user's config folder."""
    return Path(platformdirs.user_config_dir(_APP_NAME, appauthor=False)) / "secrets.key"


def open_secret_store(url: str | URL | None = None, keyring: KeyRing | None = None) -> SqlSecretStore:
    """Open the secret store, creating or upgrading its schema.

    The database is ``url``, else ``PI_SANDBOX_DATABASE_URL``, else an embedded
    SQLite file in the user's data folder. The keys are ``keyring``, else
    ``PI_SANDBOX_ENCRYPTION_KEY`` or ``PI_SANDBOX_ENCRYPTION_KEY_FILE``. Only
    the embedded database falls back further: to its key file in the user's
    config folder, which is generated when neither it nor any secret exists
    yet.

    Raises:
        KeyConfigurationError: No keys are configured (and none may be
            generated), or the configured keys are malformed or unsafely stored.
        SchemaVersionError: A newer pi-sandbox wrote the database.
        SecretStoreError: The database is unsupported, unreachable or failed.
    """
    if url is None:
        url = os.environ.get(DATABASE_URL_ENV, "").strip() or None
    embedded = url is None
    if keyring is None:
        keyring = KeyRing.from_environment()

    if url is None:
        database = default_database_path()
        _create_private_database_file(database)
        url = URL.create("sqlite", database=str(database))
    else:
        url = make_url(url)
        if url.get_backend_name() == "sqlite" and url.database not in {None, "", ":memory:"}:
            # A file named by URL gets the embedded file's mode too, when this creates it.
            _create_private_database_file(Path(url.database), make_parent=False)

    engine = create_store_engine(url)
    try:
        upgrade_schema(engine)
        if keyring is None:
            keyring = _embedded_keyring(engine) if embedded else _no_keyring(engine)
        return SqlSecretStore._from_migrated_engine(engine, keyring)
    except BaseException:
        engine.dispose()
        raise


def _no_keyring(engine: Engine) -> NoReturn:
    msg = f"no encryption key is configured for the secret store {describe_url(engine.url)}; {_KEY_HELP}"
    raise KeyConfigurationError(msg)


def _embedded_keyring(engine: Engine) -> KeyRing:
    """Load the embedded database's key file, or generate it while no secret exists."""
    path = default_key_file()
    if path.exists():
        return KeyRing.from_file(path)

    stored = count_secrets(engine)
    if stored:
        # A new key could not decrypt these rows, so none is generated.
        msg = (
            f"the secret store {describe_url(engine.url)} holds {stored} secrets, but its key "
            f"file {path} does not exist and no key is configured; restore the key file from "
            f"a backup, or {_KEY_HELP} with the key that encrypted them"
        )
        raise KeyConfigurationError(msg)

    keyring = KeyRing.generate()
    try:
        _write_private_file(path, keyring._file_content(), replace=False)
    except FileExistsError:
        # Another process generated it first; use that one.
        return KeyRing.from_file(path)
    except OSError as error:
        msg = f"cannot create the key file {path}: {error.strerror}; {_KEY_HELP}"
        raise KeyConfigurationError(msg) from None
    logger.info(
        "generated a new encryption key for the secret store %s in %s; back up that file, "
        "because without it the stored secrets cannot be decrypted",
        describe_url(engine.url),
        path,
    )
    return keyring


def _create_private_database_file(path: Path, *, make_parent: bool = True) -> None:
    """Create an empty database file with mode 0600; SQLite gives its -wal and -shm files the same mode."""
    if make_parent:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        return  # the engine reports the missing folder in its own words
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
