"""Shared parts of the benchmarks: sample records, alternation, statistics and cleanup.

Every figure pairs the library with a raw counterpart that does the same work
by hand. The two sides run alternately in one process, and the order flips
every round (library, raw, raw, library, ...). A slow drift of the machine,
such as the page cache, the engine's state or other work, therefore affects
both sides alike.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import docker
import docker.errors

__all__ = [
    "BENCH_LABEL",
    "BENCH_PID_LABEL",
    "COLD",
    "CONCURRENT",
    "FAILURES_SUFFIX",
    "INFO",
    "LIBRARY",
    "RAW",
    "STORE",
    "THROUGHPUT",
    "Figure",
    "alternate",
    "bench_folders",
    "bench_labels",
    "nearest_rank",
    "summarize",
    "sweep_containers",
    "sweep_folders",
]

logger = logging.getLogger("pi_sandbox.bench")

# Every container a benchmark starts carries both labels. The process id lets a
# later run remove the containers of a run that was killed before its cleanup.
BENCH_LABEL: Final = "dev.pi-sandbox.bench"
BENCH_PID_LABEL: Final = "dev.pi-sandbox.bench-pid"

_FOLDER_PREFIX: Final = "pi-sandbox-bench-"
_FOLDER_PATTERN: Final = re.compile(r"pi-sandbox-bench-(?:state-)?([0-9]+)-")

LIBRARY: Final = "library"
RAW: Final = "raw"

# The kinds of figure, which decide the target that applies.
COLD: Final = "cold"
THROUGHPUT: Final = "throughput"
CONCURRENT: Final = "concurrent"
STORE: Final = "store"
INFO: Final = "info"

# A cycle returns "<figure key>.failures" with a count for parts of a sample
# that failed without failing the sample, such as one of 20 concurrent creates.
FAILURES_SUFFIX: Final = ".failures"


@attrs.define
class Figure:
    """The samples of one figure, for the library and for its raw counterpart.

    Attributes:
        key: A stable identifier for the JSON output, such as ``create_to_running``.
        name: The row title in the printed table.
        kind: ``cold``, ``throughput``, ``concurrent``, ``store`` or ``info`` (no
            target); decides the target.
        raw_name: What the raw side is, in a few words, for the table and the JSON.
        library: Seconds per sample for the library.
        raw: Seconds per sample for the raw counterpart.
        failures: Failed rounds per side, which add no sample, plus failed parts
            of rounds that still gave a sample, such as failed creates among
            20 concurrent ones.
        extra: Further values for the JSON output, such as lines per run.
    """

    key: str
    name: str
    kind: str
    raw_name: str
    library: list[float] = attrs.Factory(list)
    raw: list[float] = attrs.Factory(list)
    failures: dict[str, int] = attrs.Factory(lambda: {LIBRARY: 0, RAW: 0})
    extra: dict[str, Any] = attrs.Factory(dict)

    def add(self, side: str, seconds: float | Sequence[float]) -> None:
        """Append one sample, or several, to ``side`` (``library`` or ``raw``)."""
        samples = self.library if side == LIBRARY else self.raw
        if isinstance(seconds, float | int):
            samples.append(float(seconds))
        else:
            samples.extend(float(value) for value in seconds)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready data (samples in seconds)."""
        return attrs.asdict(self)


def nearest_rank(values: Sequence[float], percent: float) -> float:
    """Return the ``percent`` percentile of ``values`` by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """Return the median, the 95th percentile (nearest rank) and the count of ``values``."""
    if not values:
        return {"median": None, "p95": None, "n": 0}
    return {"median": statistics.median(values), "p95": nearest_rank(values, 95), "n": len(values)}


Cycle = Callable[[], Mapping[str, float | Sequence[float]]]


def alternate(
    rounds: int,
    cycles: Mapping[str, Cycle],
    figures: Mapping[str, Figure],
    *,
    warmup: int = 1,
    title: str = "",
) -> None:
    """Run the library's and the raw cycle alternately, ``warmup`` unrecorded rounds first.

    Each cycle returns samples by figure key. A cycle that raises is logged
    and counts as one failure of every figure it feeds. The run goes on, so
    that one bad round does not hide the others.

    Args:
        rounds: Recorded rounds; each runs both cycles once.
        cycles: The cycle of each side, keyed ``library`` and ``raw``.
        figures: The figures the cycles' keys refer to.
        warmup: Rounds run first and not recorded.
        title: A label for the progress lines on standard error.
    """
    total = warmup + rounds
    started = time.perf_counter()
    for index in range(total):
        # The order flips every round (library-raw, raw-library, ...), so that
        # neither side always runs right after the other one's cleanup.
        order = (LIBRARY, RAW) if index % 2 == 0 else (RAW, LIBRARY)
        for side in order:
            try:
                samples = cycles[side]()
            except Exception:
                logger.warning("%s: a %s round failed", title, side, exc_info=True)
                if index >= warmup:
                    for figure in figures.values():
                        figure.failures[side] += 1
                continue
            if index < warmup:
                continue
            for key, value in samples.items():
                if key.endswith(FAILURES_SUFFIX):
                    figures[key.removesuffix(FAILURES_SUFFIX)].failures[side] += int(value)  # type: ignore[arg-type]
                else:
                    figures[key].add(side, value)
        logger.info(
            "%s: round %d of %d done (%.0f s)", title, index + 1, total, time.perf_counter() - started
        )


def bench_labels() -> dict[str, str]:
    """Return the labels that mark this process's benchmark containers."""
    return {BENCH_LABEL: "1", BENCH_PID_LABEL: str(os.getpid())}


@contextlib.contextmanager
def bench_folders() -> Iterator[dict[str, Path]]:
    """Make private folders for both sides' secrets (in memory where possible) and state.

    The folder names carry this process's id, so that `sweep_folders` can tell
    the folders of a killed run from those of a running one.
    """
    secrets_base = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-", dir=_secrets_parent()))
    state_base = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}state-{os.getpid()}-"))
    folders = {
        "library_secrets": secrets_base / "library",
        "raw_secrets": secrets_base / "raw",
        "library_state": state_base / "library",
        "raw_state": state_base / "raw",
    }
    for path in folders.values():
        path.mkdir(mode=0o700)
    try:
        yield folders
    finally:
        shutil.rmtree(secrets_base, ignore_errors=True)
        shutil.rmtree(state_base, ignore_errors=True)


def _secrets_parent() -> Path | None:
    shm = Path("/dev/shm")  # noqa: S108 - the usual memory-backed folder, checked first
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def sweep_folders() -> int:
    """Remove the folders of benchmark processes that no longer exist; return how many went."""
    removed = 0
    for parent in {_secrets_parent() or Path(tempfile.gettempdir()), Path(tempfile.gettempdir())}:
        for path in parent.glob(f"{_FOLDER_PREFIX}*"):
            match = _FOLDER_PATTERN.match(path.name)
            if match is None or _process_alive(match.group(1)) or not path.is_dir():
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _process_alive(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_containers(client: docker.APIClient, *, own: bool) -> int:
    """Remove benchmark containers by label and return how many went.

    Args:
        client: The engine client.
        own: True removes this process's containers; False removes those of
            benchmark processes that no longer exist, which a killed run left.
    """
    rows = client.containers(all=True, filters={"label": [f"{BENCH_LABEL}=1"]})
    removed = 0
    for row in rows:
        pid_text = (row.get("Labels") or {}).get(BENCH_PID_LABEL, "")
        mine = pid_text == str(os.getpid())
        if own != mine or (not own and _process_alive(pid_text)):
            continue
        try:
            client.remove_container(row["Id"], v=True, force=True)
            removed += 1
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError:
            logger.warning("could not remove benchmark container %s", row["Id"][:12], exc_info=True)
    return removed
