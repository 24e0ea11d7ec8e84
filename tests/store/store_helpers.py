"""Helpers for the secret store tests, including the functions that child processes run.

Child processes start with the "spawn" method, so every function here must
be importable by name and take only plain arguments: keys travel as
`KeyRing.export` text, because a KeyRing cannot be pickled.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from sqlalchemy import Engine, event, text

from pi_sandbox._store import KeyRing, SqlSecretStore, open_secret_store

# Exit status of a child that simulates a crash in the middle of a rotation.
CRASH_EXIT_STATUS = 17


def new_canary() -> str:
    """Return a random value that must never show up outside the store's ciphertext."""
    return f"canary-{secrets.token_hex(16)}"


def raw_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    """Return every stored row, by name, read with plain SQL."""
    with engine.connect() as connection:
        result = connection.execute(text("SELECT * FROM pi_sandbox_secrets"))
        return {row["name"]: dict(row) for row in result.mappings()}


def update_raw(engine: Engine, row_name: str, **values: Any) -> None:
    """Overwrite columns of one row with plain SQL, bypassing the store."""
    # Column names come from the calling test; the values are bound parameters.
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as connection:
        connection.execute(
            text(f"UPDATE pi_sandbox_secrets SET {assignments} WHERE name = :row_name"),  # noqa: S608
            {**values, "row_name": row_name},
        )


def write_secrets(url: str, exported_keys: str, prefix: str, count: int) -> int:
    """Store ``count`` secrets named ``{prefix}-{i}``; run in a child process."""
    with SqlSecretStore(url, KeyRing.from_string(exported_keys)) as store:
        for index in range(count):
            name = f"{prefix}-{index}"
            env_var = f"{prefix.upper().replace('-', '_')}_{index}"
            store.put(name, f"value of {name}", env_var=env_var)
    return count


def open_embedded_store() -> str:
    """Open the embedded default store and return its keys; run in a child process."""
    with open_secret_store() as store:
        return store.keyring.export()


def rotate_and_crash(url: str, exported_keys: str, crash_at_update: int) -> None:
    """Start a rotation and kill this process before its ``crash_at_update``-th UPDATE.

    The process exits with `CRASH_EXIT_STATUS` without committing, closing or
    cleaning up anything, as a crash or a power cut would.
    """
    store = SqlSecretStore(url, KeyRing.from_string(exported_keys))
    updates = 0

    @event.listens_for(store.engine, "before_cursor_execute")
    def crash_mid_rotation(*args: Any) -> None:
        nonlocal updates
        statement: str = args[2]
        if statement.lstrip().upper().startswith("UPDATE"):
            updates += 1
            if updates == crash_at_update:
                os._exit(CRASH_EXIT_STATUS)

    store.rotate(store.keyring)


def open_and_write_one(url: str, exported_keys: str, name: str) -> str:
    """Open a possibly empty database (running its migrations) and store one secret."""
    with SqlSecretStore(url, KeyRing.from_string(exported_keys)) as store:
        store.put(name, f"value of {name}", env_var=name.upper().replace("-", "_"))
    return name
