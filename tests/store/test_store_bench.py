"""The store benchmark runs and returns the rows that nox -s bench reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from pi_sandbox._store import KeyRing, SqlSecretStore

BENCH_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "store_bench.py"


def load_bench() -> ModuleType:
    """Import benchmarks/store_bench.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("store_bench", BENCH_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestStoreBench:
    """benchmarks/store_bench.py measures without leaving secrets behind."""

    def test_run_returns_three_rows_and_cleans_up(self, store_url: str, keyring: KeyRing) -> None:
        """A short run returns put, get and material rows with both sides' samples."""
        bench = load_bench()

        rows = bench.run(store_url, rounds=2)

        assert [row["key"].split("_")[1] for row in rows] == ["put", "get", "material"]
        for row in rows:
            assert row["median_s"] > 0
            assert row["p95_s"] >= row["median_s"]
            assert row["raw_median_s"] > 0
            assert row["ratio"] == row["median_s"] / row["raw_median_s"]
            assert len(row["library"]) == 2
            assert len(row["raw"]) == 2
            assert row["raw_name"].startswith("AESGCM")
        with SqlSecretStore(store_url, keyring) as store:
            assert store.list() == []
