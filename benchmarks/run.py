#!/usr/bin/env python3
"""Measure pi-sandbox against raw docker-py and raw AES-GCM, print a table and write JSON.

Each figure pairs the library with a hand-written counterpart doing the same
work, run alternately in this one process. docs/benchmarks.md describes the
method and the targets. Usage::

    python benchmarks/run.py [--rounds N] [--quick] [--json PATH] [--image TAG] [--only GROUP]

The PostgreSQL figures run when ``PI_SANDBOX_TEST_POSTGRESQL_URL`` is set
(``nox -s bench`` sets it when PostgreSQL listens on 127.0.0.1:5432). The exit
status is 0 when every figure was measured, whether or not it met its target,
and 1 when a figure could not be measured.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import secrets as random_tokens
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import docker
import harness
import store_bench
from channel_bench import make_payload, throughput
from docker_bench import SLEEP, DockerBench
from harness import COLD, CONCURRENT, LIBRARY, RAW, STORE, THROUGHPUT, Figure, summarize
from raw_docker import RawDocker

import pi_sandbox
from pi_sandbox_docker import DockerProvider

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE: Final = "pi-sandbox-local:latest"
POSTGRESQL_URL_ENV: Final = "PI_SANDBOX_TEST_POSTGRESQL_URL"
DEFAULT_ROUNDS: Final = 50
QUICK_ROUNDS: Final = 8
# Library median over raw median, at most, on every cold path.
COLD_RATIO_MAX: Final = 1.10
# Library throughput over raw throughput, at least.
THROUGHPUT_RATIO_MIN: Final = 0.90
CONCURRENT_SANDBOXES: Final = 20
# Fake keys: the sandboxes receive two secrets, as a session with two model providers would.
SECRET_NAMES: Final = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
# Container settings that must be equal on both sides for the comparison to hold.
PARITY_FIELDS: Final = (
    ("HostConfig", "CapDrop"),
    ("HostConfig", "CapAdd"),
    ("HostConfig", "SecurityOpt"),
    ("HostConfig", "PidsLimit"),
    ("HostConfig", "Memory"),
    ("HostConfig", "MemorySwap"),
    ("HostConfig", "NanoCpus"),
    ("HostConfig", "Init"),
    ("HostConfig", "NetworkMode"),
    ("HostConfig", "GroupAdd"),
    ("HostConfig", "ReadonlyRootfs"),
    ("Config", "User"),
    ("Config", "OpenStdin"),
    ("Config", "StdinOnce"),
    ("Config", "Tty"),
    ("Config", "WorkingDir"),
    ("Config", "Image"),
)

logger = logging.getLogger("pi_sandbox.bench")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=(
            f"recorded rounds of the lifecycle and attach figures (default {DEFAULT_ROUNDS}); the "
            "RPC figure gets half as many (at least 3), the concurrent creates a quarter (at "
            "least 1) and the store figures a quarter (at least 3); each Docker figure also "
            "runs one unrecorded warm-up round first"
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a short run: {QUICK_ROUNDS} rounds unless --rounds is given"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO_ROOT / "build" / "bench.json",
        help="where to write the results as JSON (default build/bench.json)",
    )
    parser.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help=f"the image both sides run (default {DEFAULT_IMAGE}, built if needed)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("lifecycle", "rpc", "concurrent", "attach", "store"),
        help="run only these groups of figures (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def machine_info(client: docker.APIClient) -> dict[str, Any]:
    """Describe the machine, the engine and the versions the figures were taken with."""
    version = client.version()
    info = client.info()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        # Other work on the machine widens the spread of every figure.
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "docker_engine": version.get("Version"),
        "docker_storage_driver": info.get("Driver"),
        "docker_cgroup_version": info.get("CgroupVersion"),
        "docker_py": docker.__version__,
        "pi_sandbox": pi_sandbox.__version__,
        "pi_sandbox_docker": importlib.metadata.version("pi-sandbox-docker"),
        **_source_revision(),
    }


def _source_revision() -> dict[str, Any]:
    """Return the checkout's commit and whether the library's sources differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "providers/docker/src"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "library_sources_changed": None}
    return {"git_commit": commit, "library_sources_changed": bool(changed)}


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def ensure_image(image: str) -> None:
    """Build the local image with images/local/build.py when ``image`` is its default tag."""
    if image != DEFAULT_IMAGE:
        return
    spec = importlib.util.spec_from_file_location("local_image_build", REPO_ROOT / "images/local/build.py")
    if spec is None or spec.loader is None:
        msg = "cannot load images/local/build.py"
        raise RuntimeError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ensure_image(image)


def check_parity(bench: DockerBench) -> list[str]:
    """Create one sandbox per side and return the container settings in which they differ."""
    sandbox = bench.create_library(SLEEP)
    container = bench.create_raw(SLEEP)
    try:
        client = bench.raw.client
        library = client.inspect_container(sandbox.provider_id)
        raw = client.inspect_container(container.id)
    finally:
        bench.discard_library(sandbox)
        bench.discard_raw(container)

    differences = []
    for section, field in PARITY_FIELDS:
        if library[section].get(field) != raw[section].get(field):
            differences.append(
                f"{section}.{field}: {library[section].get(field)!r} != {raw[section].get(field)!r}"
            )
    for name, extract in (
        ("mounts", lambda info: sorted((m["Destination"], m["RW"]) for m in info["Mounts"])),
        ("label keys", lambda info: sorted(info["Config"]["Labels"])),
        ("environment names", lambda info: sorted(e.partition("=")[0] for e in info["Config"]["Env"])),
    ):
        if extract(library) != extract(raw):
            differences.append(f"{name}: {extract(library)} != {extract(raw)}")
    return differences


def run_figures(
    args: argparse.Namespace, client: docker.APIClient, folders: dict[str, Path]
) -> list[dict[str, Any]]:
    """Run the selected groups and return every figure as a record."""
    groups = set(args.only or ("lifecycle", "rpc", "concurrent", "attach", "store"))
    quarter = max(3, args.rounds // 4)
    records: list[dict[str, Any]] = []

    if groups & {"lifecycle", "rpc", "concurrent", "attach"}:
        labels = harness.bench_labels()
        provider = DockerProvider(
            args.image,
            owner=f"bench-{os.getpid()}",
            secrets_dir=folders["library_secrets"],
            state_dir=folders["library_state"],
            pull_policy="never",
            extra_labels=labels,
        )
        raw = RawDocker(
            client,
            args.image,
            secrets_root=folders["raw_secrets"],
            state_dir=folders["raw_state"],
            labels=labels,
            owner=f"bench-raw-{os.getpid()}",
        )
        secrets = {name: random_tokens.token_urlsafe(30).encode() for name in SECRET_NAMES}
        bench = DockerBench(provider, raw, secrets)
        try:
            differences = check_parity(bench)
            if differences:
                msg = "the raw container differs from the library's: " + "; ".join(differences)
                raise RuntimeError(msg)
            logger.info("container settings are equal on both sides")

            figures: list[Figure] = []
            if "lifecycle" in groups:
                figures += bench.lifecycle(args.rounds)
            if "rpc" in groups:
                figures += bench.rpc(max(3, args.rounds // 2))
            if "attach" in groups:
                figures += throughput(bench, args.rounds, make_payload())
            if "concurrent" in groups:
                figures += bench.concurrent(max(1, args.rounds // 4), CONCURRENT_SANDBOXES)
            records += [figure.to_dict() for figure in figures]
        finally:
            provider.close()

    if "store" in groups:
        records += store_bench.run(f"sqlite:///{folders['library_state'] / 'secrets.db'}", quarter)
        postgresql_url = os.environ.get(POSTGRESQL_URL_ENV, "").strip()
        if postgresql_url:
            with store_bench.temporary_postgresql_schema(postgresql_url) as scoped_url:
                records += store_bench.run(scoped_url, quarter)
        else:
            logger.info("%s is not set: no PostgreSQL figures", POSTGRESQL_URL_ENV)
    return records


def evaluate(record: dict[str, Any]) -> dict[str, Any]:
    """Return a figure record with its statistics, its ratio and the results of its targets."""
    library, raw = summarize(record["library"]), summarize(record["raw"])
    ratio = None
    if library["median"] and raw["median"]:
        ratio = library["median"] / raw["median"]
    result: dict[str, Any] = {
        "key": record["key"],
        "name": record["name"],
        "kind": record["kind"],
        "raw_name": record["raw_name"],
        "unit": "s",
        "library": library,
        "raw": raw,
        "ratio": ratio,
        "failures": record["failures"],
        "samples": {LIBRARY: record["library"], RAW: record["raw"]},
        **record["extra"],
    }

    kind = record["kind"]
    targets: list[dict[str, str]] = []
    if kind in (COLD, CONCURRENT):
        met = ratio is not None and ratio <= COLD_RATIO_MAX
        targets.append(_target(f"library/raw median <= {COLD_RATIO_MAX:.2f}", met))
    if kind == CONCURRENT:
        failed = record["failures"][LIBRARY]
        targets.append(_target(f"no failed library create (failed: {failed})", failed == 0))
    if kind == THROUGHPUT:
        met = False
        if ratio is not None:
            lines = record["extra"]["lines"]
            result["lines_per_second"] = {LIBRARY: lines / library["median"], RAW: lines / raw["median"]}
            result["throughput_ratio"] = 1 / ratio
            met = result["throughput_ratio"] >= THROUGHPUT_RATIO_MIN
        targets.append(_target(f"library/raw lines per second >= {THROUGHPUT_RATIO_MIN:.2f}", met))
    result["targets"] = targets
    result["result"] = None
    if targets:
        result["result"] = "PASS" if all(t["result"] == "PASS" for t in targets) else "MISS"
    if kind == STORE:
        result["note"] = "raw AES-GCM stores nothing; the ratio shows the database's cost, no target"
    return result


def _target(text: str, met: bool) -> dict[str, str]:
    return {"target": text, "result": "PASS" if met else "MISS"}


def _format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def print_table(results: list[dict[str, Any]]) -> None:
    """Print one row per figure, with the target's result."""
    header = ("figure", "lib median", "lib p95", "raw median", "raw p95", "n", "ratio", "failed", "target")
    rows = [header]
    for result in results:
        ratio = result["ratio"]
        ratio_text = "-" if ratio is None else f"{ratio:.3f}"
        if "throughput_ratio" in result:
            ratio_text = f"{result['throughput_ratio']:.3f}x lines/s"
        failures = result["failures"]
        rows.append(
            (
                result["name"],
                _format_seconds(result["library"]["median"]),
                _format_seconds(result["library"]["p95"]),
                _format_seconds(result["raw"]["median"]),
                _format_seconds(result["raw"]["p95"]),
                f"{result['library']['n']}/{result['raw']['n']}",
                ratio_text,
                f"{failures[LIBRARY]}/{failures[RAW]}",
                result["result"] or "info",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))

    print()
    for result in results:
        if "lines_per_second" in result:
            rates = result["lines_per_second"]
            print(
                f"{result['name']}: library {rates[LIBRARY]:,.0f} lines/s, raw {rates[RAW]:,.0f} lines/s "
                f"({result['lines']} lines, {result['bytes'] / 1e6:.1f} MB per run)"
            )
    for result in results:
        for target in result["targets"]:
            print(f"{target['result']}  {result['name']}: {target['target']}")


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit runs the finally blocks, which remove the containers.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    # 20 threads share each client's 10 pooled connections, so urllib3 warns
    # about each extra connection it closes. The warnings do not affect the figures.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)

    ensure_image(args.image)
    client = docker.from_env().api
    machine = machine_info(client)
    left_over = harness.sweep_containers(client, own=False)
    left_over_folders = harness.sweep_folders()
    if left_over or left_over_folders:
        logger.info(
            "removed %d containers and %d folders left by earlier benchmark runs",
            left_over,
            left_over_folders,
        )

    started = time.perf_counter()
    try:
        with harness.bench_folders() as folders:
            records = run_figures(args, client, folders)
    finally:
        removed = harness.sweep_containers(client, own=True)
        if removed:
            logger.warning("removed %d benchmark containers that were still there at the end", removed)
        client.close()
    elapsed = time.perf_counter() - started
    machine["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]

    results = [evaluate(record) for record in records]
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine,
        "settings": {
            "rounds": args.rounds,
            "quick": args.quick,
            "image": args.image,
            "seconds": round(elapsed),
        },
        "figures": results,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json} after {elapsed:.0f} s")

    unmeasured = [r["name"] for r in results if not r["library"]["n"] or not r["raw"]["n"]]
    if unmeasured:
        print(f"not measured: {', '.join(unmeasured)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
