"""Fixtures for the secret store tests: one store per test, on SQLite and on PostgreSQL.

PostgreSQL tests need ``PI_SANDBOX_TEST_POSTGRESQL_URL``, for example
``postgresql+psycopg://pi_sandbox:pi_sandbox@127.0.0.1:5432/pi_sandbox_test``.
Without it they are skipped, except under ``CI=true``, where they fail. Each
test gets a new PostgreSQL schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from pi_sandbox._store import (
    DATABASE_URL_ENV,
    ENCRYPTION_KEY_ENV,
    ENCRYPTION_KEY_FILE_ENV,
    KeyRing,
    SqlSecretStore,
)

POSTGRESQL_URL_ENV = "PI_SANDBOX_TEST_POSTGRESQL_URL"


@pytest.fixture(autouse=True)
def isolated_user_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the user's data and config folders into tmp_path and clear the store's variables."""
    for name in (DATABASE_URL_ENV, ENCRYPTION_KEY_ENV, ENCRYPTION_KEY_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def keyring() -> KeyRing:
    """Return a key ring with one random key, version 1."""
    return KeyRing.generate()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """Return the URL of a new SQLite file."""
    return f"sqlite:///{tmp_path / 'secrets.db'}"


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """Return a PostgreSQL URL whose search_path is a new, empty schema."""
    base_url = os.environ.get(POSTGRESQL_URL_ENV, "").strip()
    if not base_url:
        reason = f"{POSTGRESQL_URL_ENV} is not set, so there is no PostgreSQL server to test against"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)

    schema = f"pi_sandbox_test_{secrets.token_hex(8)}"
    admin = create_engine(base_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def store_url(request: pytest.FixtureRequest) -> str:
    """Return a fresh database URL, once for SQLite and once for PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def store(store_url: str, keyring: KeyRing) -> Iterator[SqlSecretStore]:
    """Return an open store on a fresh database, closed after the test."""
    with SqlSecretStore(store_url, keyring) as opened:
        yield opened


@pytest.fixture
def raw_engine(store_url: str) -> Iterator[Engine]:
    """Return a plain engine on the store's database, for reading and altering rows directly."""
    engine = create_engine(store_url)
    try:
        yield engine
    finally:
        engine.dispose()
