"""Secret delivery: file access inside the sandbox, leaks, replacement, and cleanup after a crash."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from pi_sandbox import (
    ProviderUnavailableError,
    SandboxExistsError,
    SandboxStatus,
    SecretMaterial,
    SessionSpec,
)
from pi_sandbox.testing import contract_canary
from pi_sandbox_docker import DockerProvider, DockerSandbox, _secretfiles
from pi_sandbox_docker._engine import LABEL_OWNER, LABEL_SESSION_ID
from pi_sandbox_docker._secretfiles import parse_folder_name

# Prints every environment of every process the exec's user may read, one
# variable per line: the main process got its secrets from the entrypoint.
ALL_ENVIRONMENTS = 'for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" < "$f" 2>/dev/null; done'

Absent = Callable[[str, str, str], None]


def _session_folders(root: Path, session_id: str) -> list[Path]:
    found = []
    for entry in root.iterdir():
        parsed = parse_folder_name(entry.name)
        if parsed is not None and parsed[1] == session_id:
            found.append(entry)
    return found


class TestFolderRules:
    """The secrets folder's naming, root checks and in-place replacement, without an engine."""

    def test_root_created_private(self, tmp_path: Path) -> None:
        """A missing root is created with mode 0700."""
        root = _secretfiles.ensure_root(tmp_path / "root")

        assert stat.S_IMODE(root.stat().st_mode) == 0o700

    def test_root_open_to_others_rejected(self, tmp_path: Path) -> None:
        """A root that group or others can enter raises ProviderUnavailableError."""
        root = tmp_path / "open"
        root.mkdir(mode=0o755)
        root.chmod(0o755)

        with pytest.raises(ProviderUnavailableError, match="0755"):
            _secretfiles.ensure_root(root)

    def test_root_symlink_rejected(self, tmp_path: Path) -> None:
        """A root that is a symbolic link raises, even to a private folder."""
        target = tmp_path / "target"
        target.mkdir(mode=0o700)
        link = tmp_path / "link"
        link.symlink_to(target)

        with pytest.raises(ProviderUnavailableError, match="symbolic link"):
            _secretfiles.ensure_root(link)

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("relay.s-1", ("relay", "s-1", False)),
            (".tmp-relay.s-1.0a1b2c3d", ("relay", "s-1", True)),
            ("relay", None),
            ("re.lay.s-1", None),
            (".tmp-relay", None),
        ],
    )
    def test_folder_names(self, name: str, expected: tuple[str, str, bool] | None) -> None:
        """Folder names parse into owner, session id and whether they are temporary."""
        assert parse_folder_name(name) == expected

    def test_access_root_numeric_user_is_owner(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """As root with a numeric sandbox user, files belong to that uid with mode 0400."""
        monkeypatch.setattr(os, "geteuid", lambda: 0)

        access = _secretfiles.choose_access("1000:1000", None)
        named = _secretfiles.choose_access("user", None)

        assert (access.kind, access.uid, access.gid, access.file_mode) == ("owner", 1000, 47000, 0o400)
        assert access.group_add is None
        assert (named.kind, named.uid, named.gid, named.file_mode) == ("group", 0, 47000, 0o440)
        assert named.group_add == 47000

    def test_access_unprivileged_user(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """As another uid, files are shared through the process's group; as the sandbox uid, owned."""
        monkeypatch.setattr(os, "geteuid", lambda: 1234)
        monkeypatch.setattr(os, "getegid", lambda: 1234)

        other = _secretfiles.choose_access("1000:1000", None)
        same = _secretfiles.choose_access("1234", None)
        configured = _secretfiles.choose_access("1000", 5000)

        assert (other.kind, other.uid, other.gid) == ("group", 1234, 1234)
        assert (same.kind, same.uid, same.gid) == ("owner", 1234, 1234)
        assert (configured.kind, configured.gid, configured.group_add) == ("group", 5000, 5000)

    def test_access_label_round_trip(self) -> None:
        """An access survives its label, and a malformed label raises ValueError."""
        access = _secretfiles.SecretsAccess("group", 12, 34)

        assert _secretfiles.SecretsAccess.from_label(access.to_label()) == access
        with pytest.raises(ValueError, match="secrets access label"):
            _secretfiles.SecretsAccess.from_label("owner:x")

    def test_replace_in_place(self, tmp_path: Path) -> None:
        """Replacement keeps the folder, uses unused file names and deletes what is no longer listed."""
        root = _secretfiles.ensure_root(tmp_path / "root")
        access = _secretfiles.SecretsAccess("owner", os.geteuid(), os.getegid())
        lock = _secretfiles.create_folder(root, "o", "s", SecretMaterial({"A": "one", "B": "two"}), access)
        inode = lock.path.stat().st_ino
        first = (lock.path / "manifest").read_text()

        _secretfiles.replace_contents(lock, SecretMaterial({"A": "one", "C": "three"}), access)
        second = (lock.path / "manifest").read_text()
        names = sorted(p.name for p in lock.path.iterdir())
        lock.release()

        assert first == "A\ts-0\nB\ts-1\n"
        assert second == "A\ts-2\nC\ts-3\n"
        assert names == ["manifest", "s-2", "s-3"]
        assert (lock.path / "s-3").read_text() == "three"
        assert lock.path.stat().st_ino == inode
        assert stat.S_IMODE((lock.path / "s-2").stat().st_mode) == 0o400


@pytest.mark.integration
class TestFileAccess:
    """Who can read and write the secret files inside the sandbox."""

    def test_sandbox_user_reads_other_uid_does_not(
        self, create_sandbox: Callable[..., DockerSandbox]
    ) -> None:
        """uid 1000 reads the canary at /run/secrets; uid 1001 in the same container cannot."""
        canary = contract_canary()
        sandbox = create_sandbox(SecretMaterial({"CANARY_KEY": canary}))

        own = sandbox.exec(["sh", "-c", 'cat /run/secrets/"$(cut -f2 /run/secrets/manifest)"'])
        other = sandbox.exec(["sh", "-c", "cat /run/secrets/s-*"], user="1001:1001")
        other_manifest = sandbox.exec(["cat", "/run/secrets/manifest"], user="1001:1001")

        assert own.exit_code == 0
        assert own.stdout == canary.encode()
        assert other.exit_code != 0
        assert b"Permission denied" in other.stderr
        assert other.stdout == b""
        assert other_manifest.exit_code != 0

    def test_writes_under_run_secrets_fail(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """Creating, overwriting or deleting files under /run/secrets fails, even for root."""
        canary = contract_canary()
        sandbox = create_sandbox(SecretMaterial({"CANARY_KEY": canary}))
        attempts = [
            "echo new > /run/secrets/new-file",
            "echo changed > /run/secrets/s-0",
            "rm -f /run/secrets/manifest",
            "mkdir /run/secrets/folder",
        ]

        for script in attempts:
            for user in (None, "0:0"):
                result = sandbox.exec(["sh", "-c", script], user=user)
                assert result.exit_code != 0, f"{script!r} as {user or 'the sandbox user'} succeeded"
        listing = sandbox.exec(["ls", "-A", "/run/secrets"])
        content = sandbox.exec(["cat", "/run/secrets/s-0"])

        assert listing.stdout.split() == [b"manifest", b"s-0"]
        assert content.stdout == canary.encode()

    def test_host_files_private(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """On the host, the files are mode 0400 for the sandbox's uid, or 0440 for a shared group."""
        sandbox = create_sandbox(SecretMaterial({"CANARY_KEY": contract_canary()}))
        folder = sandbox.secrets_dir
        assert folder is not None

        root_mode = stat.S_IMODE(folder.parent.stat().st_mode)
        modes = {entry.name: stat.S_IMODE(entry.stat().st_mode) for entry in folder.iterdir()}
        owners = {entry.name: entry.stat().st_uid for entry in folder.iterdir()}

        assert root_mode == 0o700
        assert sorted(modes) == ["manifest", "s-0"]
        if os.geteuid() == 0:
            assert set(modes.values()) == {0o400}
            assert set(owners.values()) == {1000}
        else:
            assert set(modes.values()) <= {0o400, 0o440}


@pytest.mark.integration
class TestNoLeaks:
    """The secret value stays in the secret files."""

    def test_canary_absent_everywhere(
        self,
        provider: DockerProvider,
        create_sandbox: Callable[..., DockerSandbox],
        engine: docker.DockerClient,
        caplog: pytest.LogCaptureFixture,
        absent: Absent,
    ) -> None:
        """No inspect JSON, log, listing, repr, error or DEBUG record contains the canary."""
        caplog.set_level(logging.DEBUG)
        canary = contract_canary()
        material = SecretMaterial({"CANARY_KEY": canary})

        sandbox = create_sandbox(material)
        sandbox.exec(["true"], timeout=30)
        sandbox.pause()
        sandbox.resume(material)
        sandbox.stop(timeout=1)
        sandbox.resume(material)
        with pytest.raises(SandboxExistsError) as duplicate:
            provider.create(SessionSpec(session_id=sandbox.session_id, network="none"), material)
        environment = sandbox.exec(["sh", "-c", ALL_ENVIRONMENTS]).stdout.decode()
        inspected = json.dumps(engine.api.inspect_container(sandbox.container_id))
        engine_logs = engine.api.logs(sandbox.container_id).decode("utf-8", "replace")
        texts = {
            "docker inspect": inspected,
            "docker logs": engine_logs,
            "Sandbox.logs": sandbox.logs(),
            "list()": repr(provider.list()),
            "repr(sandbox)": repr(sandbox),
            "repr(provider)": repr(provider),
            "repr(state)": repr(sandbox.state()),
            "the duplicate-create error": f"{duplicate.value!r} {duplicate.value}",
            "the log records": "\n".join(
                f"{record.getMessage()} {record.exc_text or ''} {record.__dict__}"
                for record in caplog.records
            ),
        }

        assert canary in environment, (
            "the entrypoint did not export the secret (the check below means nothing)"
        )
        assert caplog.records, "nothing was logged at DEBUG"
        for where, text in texts.items():
            absent(canary, text, where)

    def test_secret_in_env_rejected(
        self, provider: DockerProvider, session_id: str, secrets_root: Path, engine: docker.DockerClient
    ) -> None:
        """A spec whose env carries a secret value is rejected before anything is made."""
        canary = contract_canary()
        spec = SessionSpec(session_id=session_id, network="none", env={"DEBUG_COPY": f"key={canary}"})

        with pytest.raises(ValueError, match=r"env\['DEBUG_COPY'\]") as raised:
            provider.create(spec, SecretMaterial({"CANARY_KEY": canary}))

        assert canary not in str(raised.value)
        assert _session_folders(secrets_root, session_id) == []
        assert engine.containers.list(all=True, filters={"name": f"pi-sandbox-{session_id}"}) == []


@pytest.mark.integration
class TestReplacement:
    """resume() and refresh_secrets() replace the set of secrets."""

    def test_deleted_secret_gone_after_restart(
        self, create_sandbox: Callable[..., DockerSandbox], absent: Absent
    ) -> None:
        """With A and B, then B deleted and the sandbox resumed: no B file, manifest line or env var."""
        value_a, value_b = contract_canary("a"), contract_canary("b")
        sandbox = create_sandbox(SecretMaterial({"KEY_A": value_a, "KEY_B": value_b}))
        before = sandbox.exec(["sh", "-c", ALL_ENVIRONMENTS]).stdout.decode()
        assert f"KEY_B={value_b}" in before, "B was not exported at first (the check below means nothing)"

        sandbox.stop(timeout=1)
        sandbox.resume(SecretMaterial({"KEY_A": value_a}))
        manifest = sandbox.exec(["cat", "/run/secrets/manifest"]).stdout.decode()
        files = sandbox.exec(["sh", "-c", "cat /run/secrets/s-*"]).stdout.decode()
        listing = sandbox.exec(["ls", "-A", "/run/secrets"]).stdout.split()
        after = sandbox.exec(["sh", "-c", ALL_ENVIRONMENTS]).stdout.decode()
        assert sandbox.secrets_dir is not None
        host_files = "".join(p.read_text() for p in sandbox.secrets_dir.iterdir())

        assert [line.split("\t")[0] for line in manifest.splitlines()] == ["KEY_A"]
        assert len(listing) == 2
        assert f"KEY_A={value_a}" in after
        assert "KEY_B" not in after
        assert "KEY_B" not in manifest
        absent(value_b, files, "the sandbox's secret files")
        absent(value_b, after, "the environment of the restarted processes")
        absent(value_b, host_files, "the host's secrets folder")

    def test_empty_set_leaves_empty_manifest(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """Resuming with no secrets leaves only an empty manifest, in the same mounted folder."""
        sandbox = create_sandbox(SecretMaterial({"KEY_A": contract_canary()}))
        assert sandbox.secrets_dir is not None
        inode = sandbox.secrets_dir.stat().st_ino

        sandbox.pause()
        sandbox.resume(SecretMaterial())

        assert sandbox.exec(["ls", "-A", "/run/secrets"]).stdout.split() == [b"manifest"]
        assert sandbox.exec(["cat", "/run/secrets/manifest"]).stdout == b""
        assert sandbox.secrets_dir.stat().st_ino == inode

    def test_refresh_while_running_visible_inside(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """refresh_secrets changes the files inside a running sandbox, without a restart."""
        old, new = contract_canary("old"), contract_canary("new")
        sandbox = create_sandbox(SecretMaterial({"KEY": old}))
        started = sandbox.state().started_at

        sandbox.refresh_secrets(SecretMaterial({"KEY": new, "OTHER": contract_canary()}))
        manifest = sandbox.exec(["cat", "/run/secrets/manifest"]).stdout.decode()
        key_file = dict(line.split("\t") for line in manifest.splitlines())["KEY"]
        read = sandbox.exec(["cat", f"/run/secrets/{key_file}"])

        assert read.stdout == new.encode()
        assert sorted(dict(line.split("\t") for line in manifest.splitlines())) == ["KEY", "OTHER"]
        assert sandbox.state().started_at == started


@pytest.mark.integration
class TestCleanupAfterCrash:
    """A host process SIGKILLed in the middle of create leaves nothing that cleanup misses."""

    @pytest.mark.parametrize("step", ["secrets-written", "container-created"])
    def test_sigkill_mid_create_then_cleanup(
        self,
        *,
        step: str,
        provider_config: dict[str, Any],
        session_id: str,
        secrets_root: Path,
        engine: docker.DockerClient,
        run_python: Callable[..., subprocess.CompletedProcess[str]],
    ) -> None:
        """Kill create after a step; a new process's cleanup() leaves no container and no secret file."""
        creator = subprocess.Popen(
            [sys.executable, "-c", _KILLED_CREATE],
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "TEST_CONFIG": json.dumps(provider_config),
                "TEST_SESSION_ID": session_id,
                "TEST_STEP": step,
                "TEST_SECRET": contract_canary(),
            },
        )
        assert creator.stdout is not None
        reached = _read_line(creator.stdout, timeout=120)
        assert reached == f"reached {step}\n"
        creator.send_signal(signal.SIGKILL)
        assert creator.wait(timeout=30) == -signal.SIGKILL
        filters = {"label": [f"{LABEL_OWNER}={provider_config['owner']}", f"{LABEL_SESSION_ID}={session_id}"]}
        left_containers = engine.containers.list(all=True, filters=filters)
        left_folders = _session_folders(secrets_root, session_id)

        cleaned = run_python(_CLEANUP, env={**os.environ, "TEST_CONFIG": json.dumps(provider_config)})

        assert cleaned.returncode == 0, cleaned.stderr
        report = json.loads(cleaned.stdout)
        assert len(left_folders) == 1, "the killed create should have left its secrets folder"
        assert report["secret_dirs_removed"] >= 1
        if step == "container-created":
            assert len(left_containers) == 1
            assert report["sandboxes_removed"] >= 1
        assert engine.containers.list(all=True, filters=filters) == []
        assert _session_folders(secrets_root, session_id) == []

    def test_cleanup_skips_locked_and_removes_abandoned_temporary(
        self, provider: DockerProvider, secrets_root: Path, session_id: str
    ) -> None:
        """A half-written temporary folder is removed; a folder another process locked stays."""
        owner = provider.owner
        abandoned = secrets_root / f".tmp-{owner}.{session_id}.0a1b2c3d"
        abandoned.mkdir(mode=0o700)
        (abandoned / "s-0").write_text("half")
        locked_folder = secrets_root / f"{owner}.{session_id}-held"
        locked_folder.mkdir(mode=0o700)
        (locked_folder / "manifest").write_text("")
        fd = os.open(locked_folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            report = provider.cleanup()
            locked_folder_kept = locked_folder.exists()
        finally:
            os.close(fd)

        assert not abandoned.exists()
        assert locked_folder_kept
        assert report.secret_dirs_removed >= 1
        provider.cleanup()
        assert not locked_folder.exists()

    def test_cleanup_keeps_live_sandbox_and_foreign_containers(
        self,
        provider: DockerProvider,
        create_sandbox: Callable[..., DockerSandbox],
        engine: docker.DockerClient,
        test_image: str,
        provider_config: dict[str, Any],
    ) -> None:
        """cleanup() keeps running and paused sandboxes and any container without the project's labels."""
        running = create_sandbox(SecretMaterial({"KEY": contract_canary()}))
        paused = create_sandbox()
        paused.pause()
        foreign = engine.containers.create(
            test_image,
            ["true"],
            labels={"dev.pi-sandbox.test": "1", LABEL_OWNER: provider_config["owner"]},
            network_mode="none",
        )
        try:
            provider.cleanup()
            foreign.reload()

            assert running.refresh() is SandboxStatus.RUNNING
            assert paused.refresh() is SandboxStatus.PAUSED
            assert running.secrets_dir is not None
            assert running.secrets_dir.exists()
            assert paused.secrets_dir is not None
            assert paused.secrets_dir.exists()
            assert foreign.status == "created"
        finally:
            foreign.remove(force=True)


def _read_line(stream: Any, timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


_KILLED_CREATE = textwrap.dedent(
    """
    import json, os, sys, time
    from pi_sandbox import SecretMaterial, SessionSpec
    from pi_sandbox_docker import DockerProvider, _provider

    def stop_at(step):
        if step == os.environ["TEST_STEP"]:
            print("reached", step, flush=True)
            time.sleep(600)

    _provider._step_hook = stop_at
    provider = DockerProvider(**json.loads(os.environ["TEST_CONFIG"]))
    spec = SessionSpec(
        session_id=os.environ["TEST_SESSION_ID"], network="none", command=["sleep", "infinity"]
    )
    provider.create(spec, SecretMaterial({"KILL_TEST_KEY": os.environ["TEST_SECRET"]}))
    print("create finished without being killed", flush=True)
    """
)

_CLEANUP = """
    import attrs, json, os
    from pi_sandbox_docker import DockerProvider

    report = DockerProvider(**json.loads(os.environ["TEST_CONFIG"])).cleanup()
    print(json.dumps(attrs.asdict(report)))
"""
