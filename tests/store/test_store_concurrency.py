"""Concurrent writers and readers, from threads and from processes, lose nothing."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable

import pytest
from store_helpers import open_and_write_one, write_secrets

from pi_sandbox._errors import InvalidSecretError
from pi_sandbox._store import KeyRing, SqlSecretStore

WRITER_THREADS = 50
READER_THREADS = 50
WRITES_PER_THREAD = 10
READS_PER_THREAD = 10


def run_threads(count: int, target: Callable[[int], object]) -> list[BaseException]:
    """Run ``target(index)`` in ``count`` threads released together; return what they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as error:
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def expected_value(writer: int, index: int) -> str:
    """Return the value writer ``writer`` stores as its ``index``-th secret."""
    return f"value {writer}/{index}\n with a second line  "


class TestThreads:
    """One store shared by many threads."""

    @pytest.mark.slow
    def test_fifty_writers_and_fifty_readers(self, store: SqlSecretStore) -> None:
        """Every write lands, readers never fail, and every value reads back intact."""
        reads: list[int] = []

        def work(index: int) -> None:
            if index < WRITER_THREADS:
                for number in range(WRITES_PER_THREAD):
                    store.put(
                        f"writer-{index}-{number}",
                        expected_value(index, number),
                        env_var=f"WRITER_{index}_{number}",
                        kind=f"writer-{index}",
                    )
                return

            # Each reader follows one writer, asking for what a sandbox start
            # would: a listing, a few values, and that writer's material.
            writer = index - WRITER_THREADS
            for _ in range(READS_PER_THREAD):
                records = store.list()
                for record in records[:3]:
                    record_writer, number = (int(part) for part in record.name.split("-")[1:])
                    assert store.get(record.name).reveal_text() == expected_value(record_writer, number)
                material = store.material(kinds=[f"writer-{writer}"])
                for number in range(len(material)):
                    value = material[f"WRITER_{writer}_{number}"].reveal_text()
                    assert value == expected_value(writer, number)
                reads.append(len(records))

        errors = run_threads(WRITER_THREADS + READER_THREADS, work)

        assert [repr(error) for error in errors] == []
        assert len(reads) == READER_THREADS * READS_PER_THREAD
        records = store.list()
        assert len(records) == WRITER_THREADS * WRITES_PER_THREAD
        material = store.material()
        for writer in range(WRITER_THREADS):
            for number in range(WRITES_PER_THREAD):
                value = material[f"WRITER_{writer}_{number}"].reveal_text()
                assert value == expected_value(writer, number)

    def test_racing_creates_of_one_name_make_one_row(self, store: SqlSecretStore) -> None:
        """Threads creating the same new name at once all succeed and leave one row."""
        values = {f"value from thread {index}" for index in range(20)}

        errors = run_threads(
            20, lambda index: store.put("shared", f"value from thread {index}", env_var="SHARED")
        )

        assert errors == []
        assert [record.name for record in store.list()] == ["shared"]
        assert store.get("shared").reveal_text() in values

    def test_racing_env_var_claims_one_wins(self, store: SqlSecretStore) -> None:
        """Of many secrets claiming one variable at once, exactly one is stored."""
        errors = run_threads(20, lambda index: store.put(f"claim-{index}", "value", env_var="CLAIMED"))

        assert len(errors) == 19
        assert all(isinstance(error, InvalidSecretError) for error in errors)
        assert len(store.list()) == 1
        assert list(store.material()) == ["CLAIMED"]


class TestProcesses:
    """Several processes, each with its own store, on one database."""

    @pytest.mark.slow
    def test_writer_processes_lose_nothing(self, store: SqlSecretStore, store_url: str) -> None:
        """Four processes writing 50 secrets each leave all 200 rows, readable here."""
        context = multiprocessing.get_context("spawn")
        jobs = [(store_url, store.keyring.export(), f"process-{number}", 50) for number in range(4)]

        with context.Pool(processes=4) as pool:
            written = pool.starmap(write_secrets, jobs)

        assert written == [50, 50, 50, 50]
        records = store.list()
        assert len(records) == 200
        material = store.material()
        assert material["PROCESS_3_49"].reveal_text() == "value of process-3-49"
        assert material["PROCESS_0_0"].reveal_text() == "value of process-0-0"

    def test_processes_opening_empty_database_migrate_once(self, store_url: str, keyring: KeyRing) -> None:
        """Processes that open a new database together all succeed and share one schema."""
        context = multiprocessing.get_context("spawn")
        names = [f"opener-{number}" for number in range(6)]

        with context.Pool(processes=6) as pool:
            opened = pool.starmap(open_and_write_one, [(store_url, keyring.export(), name) for name in names])

        assert opened == names
        with SqlSecretStore(store_url, keyring) as store:
            assert [record.name for record in store.list()] == names
