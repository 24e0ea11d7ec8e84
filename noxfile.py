"""Every developer and CI entry point: `python3 -m nox -l` lists them."""

from __future__ import annotations

import os
import socket

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests"]

PACKAGES = ["-e", ".[postgresql,testing]", "-e", "providers/docker", "-e", "tests/plugins/pi-sandbox-example"]
TEST_TOOLS = ["pytest>=8", "pytest-timeout"]
SHELL_SCRIPTS = ["images/codex-universal/entrypoint.sh", "scripts/bootstrap", ".ci/run"]
LOCAL_POSTGRESQL_URL = "postgresql+psycopg://pi_sandbox:pi_sandbox@127.0.0.1:5432/pi_sandbox_test"


def _postgresql_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _test_env() -> dict[str, str]:
    # The bootstrap script creates this database; point the store tests at it
    # unless the caller chose another server.
    env = {}
    if "PI_SANDBOX_TEST_POSTGRESQL_URL" not in os.environ and _postgresql_listening():
        env["PI_SANDBOX_TEST_POSTGRESQL_URL"] = LOCAL_POSTGRESQL_URL
    return env


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a real Docker engine, SQLite and PostgreSQL."""
    session.install(*PACKAGES, *TEST_TOOLS)
    session.run("python", "images/local/build.py")
    session.run("pytest", *(session.posargs or ["-ra"]), env=_test_env())


@nox.session
def lint(session: nox.Session) -> None:
    """Check style with ruff and the shell scripts with shellcheck."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("shellcheck", *SHELL_SCRIPTS, external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check types with mypy in strict mode."""
    session.install(*PACKAGES, "mypy==2.4.1", "pytest")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install("mkdocs>=1.6", "mkdocs-material>=9.5")
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session
def image(session: nox.Session) -> None:
    """Build the local sandbox image with the real pi; skipped when its inputs are unchanged."""
    session.run("python", "images/local/build.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run pi in a sandbox end to end: store a key, create, talk RPC, prompt, terminate."""
    session.install(*PACKAGES)
    # The demo builds the local image itself when its inputs changed.
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Measure the library against the raw Docker API and raw AES-GCM, in one run."""
    session.install(*PACKAGES)
    session.run("python", "images/local/build.py")
    session.run("python", "benchmarks/run.py", *session.posargs, env=_test_env())
