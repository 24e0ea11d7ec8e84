"""`DockerProvider`: container configuration, lookups, statuses and engine errors."""

from __future__ import annotations

import json
import os
import secrets as random_tokens
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

import pi_sandbox
from pi_sandbox import (
    ImageNotFoundError,
    InvalidSecretError,
    InvalidSpecError,
    Mount,
    ProviderUnavailableError,
    Resources,
    SandboxFailedError,
    SandboxNotFoundError,
    SandboxStateError,
    SandboxStatus,
    SecretMaterial,
    SessionSpec,
)
from pi_sandbox.testing import contract_canary
from pi_sandbox_docker import ContainerNameTakenError, DockerProvider, DockerSandbox, _provider
from pi_sandbox_docker._engine import LABEL_OWNER, LABEL_SESSION_ID
from pi_sandbox_docker._secretfiles import parse_folder_name


def _session_folders(root: Path, session_id: str) -> list[str]:
    return [
        e.name for e in root.iterdir() if (p := parse_folder_name(e.name)) is not None and p[1] == session_id
    ]


def _containers(engine: docker.DockerClient, owner: str, session_id: str) -> list[Any]:
    filters = {"label": [f"{LABEL_OWNER}={owner}", f"{LABEL_SESSION_ID}={session_id}"]}
    by_label: list[Any] = engine.containers.list(all=True, filters=filters)
    by_name: list[Any] = engine.containers.list(all=True, filters={"name": f"^pi-sandbox-{session_id}$"})
    return by_label + by_name


def _wait_until_ended(sandbox: DockerSandbox, timeout: float = 120) -> SandboxStatus:
    deadline = time.monotonic() + timeout
    while sandbox.refresh() in {SandboxStatus.RUNNING, SandboxStatus.CREATING}:
        assert time.monotonic() < deadline, "the sandbox did not end in time"
        time.sleep(0.1)
    return sandbox.status


class TestPlugin:
    """Registration through the entry point."""

    def test_import_does_not_load_docker(
        self, run_python: Callable[..., subprocess.CompletedProcess[str]]
    ) -> None:
        """Listing providers and importing the package leave the docker SDK unloaded."""
        result = run_python(
            """
            import sys
            import pi_sandbox, pi_sandbox_docker
            names = pi_sandbox.available_providers()
            print("docker" in names, "docker" in sys.modules)
            """
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["True", "False"]

    def test_get_provider_passes_config(self) -> None:
        """get_provider('docker', ...) returns a DockerProvider configured with the keywords."""
        made = pi_sandbox.get_provider("docker", image="example:1", owner="configured")

        assert isinstance(made, DockerProvider)
        assert made.image == "example:1"
        assert made.owner == "configured"

    def test_image_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an image argument, $SANDBOX_DOCKER_IMAGE and then the local image are used."""
        monkeypatch.setenv("SANDBOX_DOCKER_IMAGE", "from-env:2")
        assert DockerProvider().image == "from-env:2"
        monkeypatch.delenv("SANDBOX_DOCKER_IMAGE")
        assert DockerProvider().image == "pi-sandbox-local:latest"

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({"pull_policy": "sometimes"}, "pull_policy"),
            ({"owner": "has.dot"}, "owner"),
            ({"extra_labels": {"dev.pi-sandbox.managed": "0"}}, "set by the provider"),
            ({"tiers": {"huge": Resources()}}, "tiers key"),
            ({"secrets_gid": -1}, "secrets_gid"),
        ],
    )
    def test_invalid_config_rejected(self, config: dict[str, Any], message: str) -> None:
        """Bad constructor arguments raise ValueError naming the argument."""
        with pytest.raises(ValueError, match=message):
            DockerProvider(**config)


@pytest.mark.integration
class TestContainer:
    """The container configuration sent to the engine."""

    def test_hardened_configuration(
        self, create_sandbox: Callable[..., DockerSandbox], engine: docker.DockerClient
    ) -> None:
        """User, capabilities, privileges, limits, mounts, stdin and labels are set as documented."""
        sandbox = create_sandbox(SecretMaterial({"CANARY_KEY": contract_canary()}))

        info = engine.api.inspect_container(sandbox.container_id)
        host, config = info["HostConfig"], info["Config"]
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        env = dict(item.split("=", 1) for item in config["Env"])
        status = sandbox.exec(["cat", "/proc/self/status"]).stdout.decode()

        assert config["User"] == "1000:1000"
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["PidsLimit"] == 256
        assert host["Memory"] == 1024 * 1024 * 1024
        assert host["MemorySwap"] == host["Memory"]
        assert host["NanoCpus"] == 1_000_000_000
        assert host["Init"] is True
        assert host["NetworkMode"] == "none"
        assert config["OpenStdin"] is True
        assert config["StdinOnce"] is False
        assert config["Tty"] is False
        assert info["Name"] == f"/pi-sandbox-{sandbox.session_id}"
        assert mounts["/run/secrets"]["Type"] == "bind"
        assert mounts["/run/secrets"]["RW"] is False
        assert mounts["/workspace"]["RW"] is True
        assert mounts["/data/agent"]["RW"] is True
        assert env["PI_SESSION_ID"] == sandbox.session_id
        assert env["PI_SECRETS_DIR"] == "/run/secrets"
        assert env["PI_CODING_AGENT_DIR"] == "/data/agent"
        assert "CANARY_KEY" not in env
        assert config["Labels"]["dev.pi-sandbox.managed"] == "1"
        assert config["Labels"]["dev.pi-sandbox.provider"] == "docker"
        assert config["Labels"]["dev.pi-sandbox.session-id"] == sandbox.session_id
        assert len(config["Labels"]["dev.pi-sandbox.spec-hash"]) == 64
        assert config["Labels"]["dev.pi-sandbox.image-id"] == info["Image"]
        assert sandbox.image_id == info["Image"]
        assert "CapEff:\t0000000000000000" in status
        assert "NoNewPrivs:\t1" in status

    def test_tier_override_and_network_none(
        self, provider_config: dict[str, Any], engine: docker.DockerClient, session_id: str
    ) -> None:
        """A tiers entry replaces the small tier's limits, and network 'none' leaves only loopback."""
        provider = DockerProvider(
            **provider_config, tiers={"small": Resources(cpus=0.5, memory_mb=256, pids=64)}
        )
        sandbox = provider.create(
            SessionSpec(session_id=session_id, network="none", command=["sleep", "infinity"])
        )
        assert isinstance(sandbox, DockerSandbox)
        try:
            host = engine.api.inspect_container(sandbox.container_id)["HostConfig"]
            interfaces = sandbox.exec(["ls", "/sys/class/net"]).stdout.split()

            assert host["NanoCpus"] == 500_000_000
            assert host["Memory"] == 256 * 1024 * 1024
            assert host["PidsLimit"] == 64
            assert interfaces == [b"lo"]
        finally:
            sandbox.terminate(remove_data=True, timeout=1)
            provider.close()

    def test_data_survives_stop_and_terminate(self, provider: DockerProvider, session_id: str) -> None:
        """Workspace and agent files survive stop, start and terminate; remove_data deletes them."""
        spec = SessionSpec(session_id=session_id, network="none", command=["sleep", "infinity"])
        sandbox = provider.create(spec)
        sandbox.exec(["sh", "-c", "echo w > /workspace/w.txt && echo a > /data/agent/a.txt"])
        workspace = provider.state_dir / "workspaces" / session_id
        agent = provider.state_dir / "agent" / session_id

        sandbox.stop(timeout=1)
        sandbox.resume()
        after_restart = sandbox.exec(["cat", "/workspace/w.txt", "/data/agent/a.txt"]).stdout
        sandbox.terminate(timeout=1)
        kept_files = (workspace / "w.txt").read_text(), (agent / "a.txt").read_text()
        again = provider.create(spec)
        in_new_sandbox = again.exec(["cat", "/workspace/w.txt"]).stdout
        again.terminate(remove_data=True, timeout=1)

        assert after_restart == b"w\na\n"
        assert kept_files == ("w\n", "a\n")
        assert in_new_sandbox == b"w\n"
        assert not workspace.exists()
        assert not agent.exists()


@pytest.mark.integration
class TestStatus:
    """Status from the engine's state, and what a crash or OOM kill looks like."""

    def test_stop_is_stopped(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """A stopped sandbox reports STOPPED, from a fresh provider's listing too."""
        sandbox = create_sandbox()

        sandbox.stop(timeout=1)
        state = sandbox.state()
        listed = {info.session_id: info.status for info in sandbox.provider.list()}

        assert sandbox.refresh() is SandboxStatus.STOPPED
        assert state.exit_code in {0, 137, 143}
        assert listed[sandbox.session_id] is SandboxStatus.STOPPED

    def test_stop_while_paused(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """A paused sandbox stops, and resume starts it again."""
        sandbox = create_sandbox()
        sandbox.pause()

        sandbox.stop(timeout=1)
        stopped = sandbox.refresh()
        sandbox.resume()

        assert stopped is SandboxStatus.STOPPED
        assert sandbox.refresh() is SandboxStatus.RUNNING

    def test_pause_twice_and_pause_stopped(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """A second pause is harmless; pausing a stopped sandbox raises SandboxStateError."""
        sandbox = create_sandbox()
        sandbox.pause()
        sandbox.pause()
        paused = sandbox.refresh()
        sandbox.resume()
        sandbox.stop(timeout=1)

        with pytest.raises(SandboxStateError, match="stopped"):
            sandbox.pause()
        assert paused is SandboxStatus.PAUSED

    def test_crash_is_error(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """A main process that exits with status 3 leaves the sandbox in ERROR."""
        sandbox = create_sandbox(command=["sh", "-c", "read line; exit 3"])
        with sandbox.attach() as channel:
            channel.send({"go": True})

        status = _wait_until_ended(sandbox)

        assert status is SandboxStatus.ERROR
        assert sandbox.state().exit_code == 3
        assert "status 3" in sandbox.state().describe()

    def test_oom_kill_is_error(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """A main process killed for memory leaves ERROR, and exec explains why."""
        sandbox = create_sandbox(
            command=["sh", "-c", "read line; exec tail /dev/zero"],
            resources=Resources(cpus=1, memory_mb=64, pids=64),
        )
        with sandbox.attach() as channel:
            channel.send({"go": True})

        status = _wait_until_ended(sandbox)
        with pytest.raises(SandboxStateError, match="out-of-memory") as raised:
            sandbox.exec(["true"])

        assert status is SandboxStatus.ERROR
        assert sandbox.state().oom_killed
        assert "resume()" in str(raised.value)

    def test_paused_exec_explains(self, create_sandbox: Callable[..., DockerSandbox]) -> None:
        """exec on a paused sandbox raises SandboxStateError naming the paused state."""
        sandbox = create_sandbox()
        sandbox.pause()

        with pytest.raises(SandboxStateError, match="paused"):
            sandbox.exec(["true"])


@pytest.mark.integration
class TestLookups:
    """Finding sandboxes from labels alone."""

    def test_new_process_controls_sandbox(
        self,
        create_sandbox: Callable[..., DockerSandbox],
        provider_config: dict[str, Any],
        run_python: Callable[..., subprocess.CompletedProcess[str]],
    ) -> None:
        """Another process finds the sandbox by session id, runs a command in it and pauses it."""
        sandbox = create_sandbox()

        result = run_python(
            """
            import json, os
            from pi_sandbox_docker import DockerProvider
            provider = DockerProvider(**json.loads(os.environ["TEST_CONFIG"]))
            found = provider.find(os.environ["TEST_SESSION_ID"])
            print(found.provider_id, found.status.value, found.exec(["echo", "hi"]).stdout.decode().strip())
            found.pause()
            """,
            env={
                **os.environ,
                "TEST_CONFIG": json.dumps(provider_config),
                "TEST_SESSION_ID": sandbox.session_id,
            },
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [sandbox.provider_id, "running", "hi"]
        assert sandbox.refresh() is SandboxStatus.PAUSED

    def test_other_owner_sees_nothing(
        self, create_sandbox: Callable[..., DockerSandbox], provider_config: dict[str, Any]
    ) -> None:
        """A provider with another owner neither lists, finds, gets nor cleans up the sandbox."""
        sandbox = create_sandbox()
        sandbox.stop(timeout=1)
        other = DockerProvider(**{**provider_config, "owner": f"other-{random_tokens.token_hex(4)}"})

        listed = other.list()
        found = other.find(sandbox.session_id)
        report = other.cleanup()

        assert sandbox.session_id not in {info.session_id for info in listed}
        assert found is None
        with pytest.raises(SandboxNotFoundError):
            other.get(sandbox.provider_id)
        assert report.sandboxes_removed == 0
        assert sandbox.refresh() is SandboxStatus.STOPPED

    def test_get_by_id_prefix(
        self, provider: DockerProvider, create_sandbox: Callable[..., DockerSandbox]
    ) -> None:
        """get() accepts the short id the engine accepts and returns the full id."""
        sandbox = create_sandbox()

        assert provider.get(sandbox.provider_id[:12]).provider_id == sandbox.provider_id


@pytest.mark.integration
class TestFailures:
    """Errors that name the problem and the fix, and leave nothing behind."""

    def test_missing_image_never(
        self,
        provider_config: dict[str, Any],
        session_id: str,
        secrets_root: Path,
        engine: docker.DockerClient,
    ) -> None:
        """With pull_policy 'never', a missing image raises ImageNotFoundError naming the fixes."""
        missing = f"pi-sandbox-test-missing-{random_tokens.token_hex(4)}:latest"
        provider = DockerProvider(**{**provider_config, "image": missing})

        check = provider.check()
        with pytest.raises(ImageNotFoundError) as raised:
            provider.create(SessionSpec(session_id=session_id, network="none"))

        assert not check.usable
        assert "nox -s image" in check.hint
        assert raised.value.image == missing
        assert "nox -s image" in str(raised.value)
        assert "docker pull" in str(raised.value)
        assert _session_folders(secrets_root, session_id) == []
        assert _containers(engine, provider.owner, session_id) == []

    def test_missing_mount_source(
        self,
        provider: DockerProvider,
        session_id: str,
        secrets_root: Path,
        engine: docker.DockerClient,
        tmp_path: Path,
    ) -> None:
        """A missing mount source raises InvalidSpecError and nothing is made, not even the source."""
        source = tmp_path / "not-there"
        spec = SessionSpec(session_id=session_id, network="none", mounts=(Mount(source, "/mnt/data"),))

        with pytest.raises(InvalidSpecError) as raised:
            provider.create(spec)

        assert raised.value.field == "mounts[0].source"
        assert str(source) in str(raised.value)
        assert not source.exists()
        assert _session_folders(secrets_root, session_id) == []
        assert _containers(engine, provider.owner, session_id) == []
        assert not (provider.state_dir / "workspaces" / session_id).exists()

    def test_missing_workspace_rejected(
        self, provider: DockerProvider, session_id: str, tmp_path: Path
    ) -> None:
        """An explicit workspace that does not exist raises InvalidSpecError and is not created."""
        workspace = tmp_path / "no-workspace"

        with pytest.raises(InvalidSpecError, match="workspace"):
            provider.create(SessionSpec(session_id=session_id, network="none", workspace=workspace))

        assert not workspace.exists()

    def test_failure_after_container_rolls_back(
        self,
        provider: DockerProvider,
        session_id: str,
        secrets_root: Path,
        engine: docker.DockerClient,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A failure once the container exists removes container, secrets folder and new folders."""
        seen: list[str] = []

        def fail_after_create(step: str) -> None:
            if step == "container-created":
                seen.append(str(_containers(engine, provider.owner, session_id)))
                raise RuntimeError("injected failure")

        monkeypatch.setattr(_provider, "_step_hook", fail_after_create)

        with pytest.raises(SandboxFailedError, match="injected failure") as raised:
            provider.create(SessionSpec(session_id=session_id, network="none"), {"KEY": contract_canary()})

        assert raised.value.session_id == session_id
        assert seen != ["[]"], "the container should have existed when the failure was injected"
        assert len(seen) == 1
        assert _containers(engine, provider.owner, session_id) == []
        assert _session_folders(secrets_root, session_id) == []
        assert not (provider.state_dir / "workspaces" / session_id).exists()
        assert not (provider.state_dir / "agent" / session_id).exists()

    def test_early_exit_carries_redacted_log_tail(
        self,
        provider: DockerProvider,
        session_id: str,
        engine: docker.DockerClient,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A command that prints its secret and exits raises SandboxFailedError with the value redacted."""
        canary = contract_canary()

        def wait_for_exit(step: str) -> None:
            if step == "container-started":
                engine.api.wait(f"pi-sandbox-{session_id}", timeout=60)

        monkeypatch.setattr(_provider, "_step_hook", wait_for_exit)
        spec = SessionSpec(
            session_id=session_id, network="none", command=["sh", "-c", 'echo "key is $LEAKY_KEY"; exit 3']
        )

        with pytest.raises(SandboxFailedError) as raised:
            provider.create(spec, SecretMaterial({"LEAKY_KEY": canary}))

        assert raised.value.exit_status == 3
        assert "key is <redacted>" in raised.value.log_tail
        if canary in f"{raised.value!s} {raised.value!r} {raised.value.log_tail}":
            pytest.fail("the secret value appears in the error", pytrace=False)
        assert _containers(engine, provider.owner, session_id) == []

    def test_name_taken_by_foreign_container(
        self,
        provider: DockerProvider,
        session_id: str,
        engine: docker.DockerClient,
        test_image: str,
        secrets_root: Path,
    ) -> None:
        """A container named pi-sandbox-<id> without the project's labels raises and stays untouched."""
        foreign = engine.containers.create(
            test_image,
            ["true"],
            name=f"pi-sandbox-{session_id}",
            labels={"dev.pi-sandbox.test": "1", LABEL_OWNER: provider.owner},
            network_mode="none",
        )
        try:
            with pytest.raises(ContainerNameTakenError) as raised:
                provider.create(SessionSpec(session_id=session_id, network="none"))
            foreign.reload()

            assert isinstance(raised.value, FileExistsError)
            assert foreign.id[:12] in str(raised.value)
            assert foreign.status == "created"
            assert _session_folders(secrets_root, session_id) == []
        finally:
            foreign.remove(force=True)

    def test_engine_unreachable(self, tmp_path: Path, session_id: str) -> None:
        """Without an engine, check() says how to start it and create raises ProviderUnavailableError."""
        provider = DockerProvider(base_url=f"unix://{tmp_path}/docker.sock", state_dir=tmp_path)

        check = provider.check()
        with pytest.raises(ProviderUnavailableError) as raised:
            provider.create(SessionSpec(session_id=session_id))

        assert not check.usable
        assert "not reachable" in check.detail
        assert "systemctl start docker" in str(raised.value)
        assert str(tmp_path) in str(raised.value)

    def test_check_reports_engine_and_image(self, provider: DockerProvider) -> None:
        """check() on a working host is usable and names the engine version and the image."""
        check = provider.check()

        assert check.usable, check.detail
        assert "Docker Engine" in check.detail
        assert provider.image in check.detail


class TestOversizedSecret:
    def test_create_rejects_secret_over_env_limit(
        self, provider: DockerProvider, session_id: str, secrets_root: Path
    ) -> None:
        """A secret too long for one environment variable fails before anything is made."""
        spec = SessionSpec(session_id=session_id, command=["sleep", "60"], network="none")
        value = "v" * 140_000

        with pytest.raises(InvalidSecretError) as raised:
            provider.create(spec, SecretMaterial({"BIG_TOKEN": value}))

        assert "BIG_TOKEN" in str(raised.value)
        assert "at most" in str(raised.value)
        assert value[:50] not in str(raised.value)
        assert provider.find(spec.session_id) is None
        assert [path for path in secrets_root.rglob("*") if session_id in path.name] == []
