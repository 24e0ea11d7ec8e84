"""Time the secret store's put, get and material() against bare AES-256-GCM.

Run ``python benchmarks/store_bench.py`` to print a table for a temporary
SQLite file and, when ``PI_SANDBOX_TEST_POSTGRESQL_URL`` is set, for a
temporary schema on that PostgreSQL server. `run` returns the rows for
other tools (``nox -s bench``).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import create_engine, make_url, text

from pi_sandbox._store import KeyRing, SqlSecretStore

SECRET_COUNT = 50
# Random bytes per value; as URL-safe base64 they make a 64-character, API-key-like value.
VALUE_BYTES = 48
POSTGRESQL_URL_ENV = "PI_SANDBOX_TEST_POSTGRESQL_URL"


def _p95(samples: list[float]) -> float:
    """Return the 95th percentile by the nearest-rank method."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _row(
    key: str, name: str, samples: list[float], *, raw_name: str, raw_samples: list[float], backend: str
) -> dict[str, Any]:
    median = statistics.median(samples)
    raw_median = statistics.median(raw_samples)
    return {
        "key": f"store_{key}_{backend}",
        "name": f"{name} ({backend})",
        "kind": "store",
        "median_s": median,
        "p95_s": _p95(samples),
        "raw_name": raw_name,
        "raw_median_s": raw_median,
        "ratio": median / raw_median if raw_median else math.inf,
        # The samples themselves, in the record shape benchmarks/run.py reads.
        "library": samples,
        "raw": raw_samples,
        "failures": {"library": 0, "raw": 0},
        "extra": {"backend": backend, "secrets": SECRET_COUNT},
    }


def run(url: str, rounds: int = 20) -> list[dict[str, Any]]:
    """Measure the store against bare AES-GCM on the same 50 values.

    Each round times, as one sample each: 50 ``put`` calls, 50 ``get`` calls,
    one ``material()`` of the 50 secrets, 50 bare ``AESGCM.encrypt`` calls
    and 50 bare ``AESGCM.decrypt`` calls. The secrets carry a kind unique to
    this run, so other secrets in the database neither conflict nor count,
    and they are deleted at the end.

    Args:
        url: The database, as for `SqlSecretStore`.
        rounds: How many samples to take of each measurement.

    Returns:
        One row per store operation: ``name``, ``median_s`` and ``p95_s`` (seconds
        for the whole batch of 50), the matching bare operation's ``raw_name``
        and ``raw_median_s``, and ``ratio`` of the two medians. Each row also
        carries ``key``, ``kind``, the samples as ``library`` and ``raw``,
        ``failures`` and ``extra``, the record shape benchmarks/run.py reads.
    """
    if rounds < 1:
        msg = f"rounds must be at least 1, not {rounds}"
        raise ValueError(msg)

    run_id = secrets.token_hex(4)
    kind = f"bench-{run_id}"
    names = [f"bench-{run_id}-{index}" for index in range(SECRET_COUNT)]
    env_vars = [f"BENCH_{run_id.upper()}_{index}" for index in range(SECRET_COUNT)]
    values = [secrets.token_urlsafe(VALUE_BYTES).encode() for _ in range(SECRET_COUNT)]
    cipher = AESGCM(AESGCM.generate_key(bit_length=256))
    associated = [name.encode() for name in names]

    timings: dict[str, list[float]] = {key: [] for key in ("put", "get", "material", "encrypt", "decrypt")}
    with SqlSecretStore(url, KeyRing.generate()) as store:
        backend = store.engine.dialect.name
        try:
            for _ in range(rounds):
                started = time.perf_counter()
                for name, value, env_var in zip(names, values, env_vars, strict=True):
                    store.put(name, value, env_var=env_var, kind=kind)
                timings["put"].append(time.perf_counter() - started)

                started = time.perf_counter()
                for name in names:
                    store.get(name)
                timings["get"].append(time.perf_counter() - started)

                started = time.perf_counter()
                store.material(kinds=[kind])
                timings["material"].append(time.perf_counter() - started)

                sealed: list[tuple[bytes, bytes]] = []
                started = time.perf_counter()
                for value, data in zip(values, associated, strict=True):
                    nonce = os.urandom(12)
                    sealed.append((nonce, cipher.encrypt(nonce, value, data)))
                timings["encrypt"].append(time.perf_counter() - started)

                started = time.perf_counter()
                for (nonce, ciphertext), data in zip(sealed, associated, strict=True):
                    cipher.decrypt(nonce, ciphertext, data)
                timings["decrypt"].append(time.perf_counter() - started)
        finally:
            for name in names:
                with contextlib.suppress(LookupError):
                    store.delete(name)

    encrypt_name = f"AESGCM encrypt x{SECRET_COUNT}"
    decrypt_name = f"AESGCM decrypt x{SECRET_COUNT}"
    return [
        _row(
            "put",
            f"store put x{SECRET_COUNT}",
            timings["put"],
            raw_name=encrypt_name,
            raw_samples=timings["encrypt"],
            backend=backend,
        ),
        _row(
            "get",
            f"store get x{SECRET_COUNT}",
            timings["get"],
            raw_name=decrypt_name,
            raw_samples=timings["decrypt"],
            backend=backend,
        ),
        _row(
            "material",
            f"store material() of {SECRET_COUNT}",
            timings["material"],
            raw_name=decrypt_name,
            raw_samples=timings["decrypt"],
            backend=backend,
        ),
    ]


@contextlib.contextmanager
def temporary_postgresql_schema(url: str) -> Iterator[str]:
    """Create a schema for one run and yield a URL that uses it; drop it afterwards."""
    schema = f"pi_sandbox_bench_{secrets.token_hex(4)}"
    admin = create_engine(url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield (
                make_url(url)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def format_table(rows: list[dict[str, Any]]) -> str:
    """Render rows from `run` as a fixed-width text table, times in milliseconds."""
    header = (
        f"{'operation':<38} {'median ms':>10} {'p95 ms':>9}  "
        f"{'bare operation':<20} {'median ms':>10} {'ratio':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['name']:<38} {row['median_s'] * 1000:>10.2f} {row['p95_s'] * 1000:>9.2f}  "
            f"{row['raw_name']:<20} {row['raw_median_s'] * 1000:>10.3f} {row['ratio']:>8.0f}"
        )
    return "\n".join(lines)


def main() -> int:
    """Print the table for SQLite and, if configured, PostgreSQL."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as folder:
        rows = run(f"sqlite:///{Path(folder) / 'bench.db'}", rounds=rounds)
    print(format_table(rows))

    postgresql_url = os.environ.get(POSTGRESQL_URL_ENV, "").strip()
    if not postgresql_url:
        print(f"\npostgresql: skipped, {POSTGRESQL_URL_ENV} is not set")
        return 0
    with temporary_postgresql_schema(postgresql_url) as url:
        rows = run(url, rounds=rounds)
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
