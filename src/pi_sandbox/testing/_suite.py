"""The checks of the provider contract suite."""

from __future__ import annotations

import json
import logging
import secrets as random_tokens
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .._errors import PiSandboxError, SandboxExistsError, SandboxNotFoundError
from .._plugins import plugin_manager
from .._provider import Sandbox, SandboxProvider
from .._records import SandboxEvent, SandboxStatus
from .._secrets import SecretMaterial
from .._spec import Mount, SessionSpec
from ..hookspecs import hookimpl

__all__ = ["ProviderContract", "contract_canary"]

SpecFactory = Callable[..., SessionSpec]

# Bytes a delivered secret must keep exactly: quotes, shell syntax, unicode and
# inner and trailing newlines, which naive readers lose.
_SECRET_SHAPES = ("'\"$(id)`id`$HOME = x\n", "ключ \u2013 鍵 \u2013 🔑  \n\n")


def contract_canary(label: str = "canary") -> str:
    """Return a unique value that must never show up outside the sandbox's secret files."""
    return f"{label}-{random_tokens.token_hex(12)}"


class _EventRecorder:
    def __init__(self) -> None:
        self.events: list[SandboxEvent] = []

    @hookimpl
    def sandbox_event(self, event: SandboxEvent) -> None:
        self.events.append(event)

    def kinds(self, session_id: str) -> list[str]:
        return [e.kind for e in self.events if e.session_id == session_id]


def _skip_unless(provider: SandboxProvider, *capabilities: str) -> None:
    for capability in capabilities:
        if not getattr(provider.capabilities, capability):
            pytest.skip(f"provider {provider.name!r} declares {capability}=False")


def _sh(sandbox: Sandbox, script: str, **kwargs: Any) -> str:
    result = sandbox.exec(["sh", "-c", script], **kwargs)
    assert result.exit_code == 0, f"{script!r} exited {result.exit_code}: {result.stderr[-2000:]!r}"
    return result.stdout.decode()


@pytest.mark.contract
class ProviderContract:
    """Subclass this in a provider's tests and supply the fixtures named in the module doc."""

    @pytest.fixture
    def provider_factory(self) -> Callable[[], SandboxProvider]:
        """Return a zero-argument callable that makes a fresh provider instance."""
        pytest.fail("a ProviderContract subclass must define the provider_factory fixture")

    @pytest.fixture
    def contract_image(self) -> str | None:
        """Return the image the contract sandboxes run (None for the provider's default)."""
        return None

    @pytest.fixture
    def contract_spec_overrides(self) -> dict[str, Any]:
        """Return SessionSpec fields every contract sandbox gets (network, labels, ...)."""
        return {"network": "none"}

    @pytest.fixture
    def provider(self, provider_factory: Callable[[], SandboxProvider]) -> Iterator[SandboxProvider]:
        """Yield a provider instance and close it after the test."""
        instance = provider_factory()
        yield instance
        instance.close()

    @pytest.fixture
    def make_spec(
        self, contract_image: str | None, contract_spec_overrides: dict[str, Any], tmp_path: Path
    ) -> SpecFactory:
        """Return a factory of specs with a unique session id and a fresh workspace."""

        def make(**fields: Any) -> SessionSpec:
            workspace = tmp_path / f"workspace-{random_tokens.token_hex(4)}"
            workspace.mkdir(mode=0o777)
            workspace.chmod(0o777)
            values: dict[str, Any] = {
                "session_id": f"contract-{random_tokens.token_hex(6)}",
                "image": contract_image,
                "command": ["sleep", "3600"],
                "workspace": workspace,
                **contract_spec_overrides,
            }
            values.update(fields)
            return SessionSpec(**values)

        return make

    @pytest.fixture
    def sandboxes(self, provider: SandboxProvider) -> Iterator[list[Sandbox]]:
        """Yield a list for the test's sandboxes, and terminate each one afterwards."""
        made: list[Sandbox] = []
        yield made
        for sandbox in made:
            try:
                sandbox.terminate(remove_data=True, timeout=1)
            except PiSandboxError:
                logging.getLogger("pi_sandbox.testing").warning(
                    "could not terminate %r", sandbox, exc_info=True
                )

    @pytest.fixture
    def create(
        self, provider: SandboxProvider, make_spec: SpecFactory, sandboxes: list[Sandbox]
    ) -> Callable[..., Sandbox]:
        """Return a function that creates a sandbox (spec fields as keywords) and tracks it."""

        def create_sandbox(secrets: SecretMaterial | None = None, **fields: Any) -> Sandbox:
            sandbox = provider.create(make_spec(**fields), secrets)
            sandboxes.append(sandbox)
            return sandbox

        return create_sandbox

    @pytest.fixture
    def events(self) -> Iterator[_EventRecorder]:
        """Record every sandbox event reported during the test."""
        recorder = _EventRecorder()
        plugin_manager().register(recorder)
        yield recorder
        plugin_manager().unregister(recorder)

    # Lifecycle

    def test_create_reaches_running(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """A created sandbox is running and is found by its session id."""
        sandbox = create()

        assert sandbox.status is SandboxStatus.RUNNING
        assert sandbox.refresh() is SandboxStatus.RUNNING
        found = provider.find(sandbox.session_id)
        assert found is not None
        assert found.provider_id == sandbox.provider_id
        assert provider.get(sandbox.provider_id).session_id == sandbox.session_id
        listed = {info.session_id: info for info in provider.list()}
        assert listed[sandbox.session_id].status is SandboxStatus.RUNNING
        assert listed[sandbox.session_id].provider == provider.name

    def test_create_same_session_twice_raises(
        self, provider: SandboxProvider, create: Callable[..., Sandbox], make_spec: SpecFactory
    ) -> None:
        """A second sandbox for one session id raises SandboxExistsError and keeps the first."""
        first = create()

        with pytest.raises(SandboxExistsError):
            provider.create(make_spec(session_id=first.session_id))

        assert first.refresh() is SandboxStatus.RUNNING

    def test_events_reported(
        self, create: Callable[..., Sandbox], provider: SandboxProvider, events: _EventRecorder
    ) -> None:
        """Created, paused, resumed and terminated reach the sandbox_event hook in order."""
        sandbox = create()
        expected = ["created"]
        if provider.capabilities.lossless_pause:
            sandbox.pause()
            sandbox.resume()
            expected += ["paused", "resumed"]
        sandbox.terminate(remove_data=True, timeout=1)
        expected.append("terminated")

        assert events.kinds(sandbox.session_id) == expected

    def test_failed_create_reported_and_leaves_nothing(
        self, provider: SandboxProvider, make_spec: SpecFactory, events: _EventRecorder, tmp_path: Path
    ) -> None:
        """A mount whose source is missing raises a PiSandboxError, reports failed and leaves no sandbox."""
        spec = make_spec(mounts=[Mount(tmp_path / "missing", "/mnt/missing")])

        with pytest.raises(PiSandboxError) as raised:
            provider.create(spec)

        assert "missing" in str(raised.value)
        assert events.kinds(spec.session_id) == ["failed"]
        assert provider.find(spec.session_id) is None
        assert spec.session_id not in {info.session_id for info in provider.list()}

    def test_terminate_leaves_nothing(
        self, provider: SandboxProvider, create: Callable[..., Sandbox]
    ) -> None:
        """After terminate the sandbox cannot be found, and a second terminate is harmless."""
        sandbox = create()

        sandbox.terminate(timeout=1)
        sandbox.terminate(timeout=1)

        assert sandbox.status is SandboxStatus.REMOVED
        assert provider.find(sandbox.session_id) is None
        assert sandbox.session_id not in {info.session_id for info in provider.list()}
        with pytest.raises(SandboxNotFoundError):
            provider.get(sandbox.provider_id)
        with pytest.raises(PiSandboxError):
            sandbox.exec(["true"])

    def test_fresh_provider_finds_sandbox(
        self, create: Callable[..., Sandbox], provider_factory: Callable[[], SandboxProvider]
    ) -> None:
        """A new provider instance finds a running sandbox by session id and controls it."""
        sandbox = create()
        other = provider_factory()
        try:
            found = other.find(sandbox.session_id)

            assert found is not None
            assert found.provider_id == sandbox.provider_id
            assert found.refresh() is SandboxStatus.RUNNING
            if other.capabilities.exec:
                assert found.exec(["echo", "found"]).stdout == b"found\n"
        finally:
            other.close()

    def test_unknown_provider_id_raises(self, provider: SandboxProvider) -> None:
        """get() of an id no sandbox has raises SandboxNotFoundError, a LookupError."""
        with pytest.raises(SandboxNotFoundError) as raised:
            provider.get("no-such-sandbox-0123456789")

        assert isinstance(raised.value, LookupError)
        assert provider.find("no-such-session") is None

    def test_cleanup_removes_stopped(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """cleanup() removes a stopped sandbox of this project and reports it."""
        _skip_unless(provider, "stop_start")
        stopped = create()
        running = create()
        stopped.stop(timeout=1)

        report = provider.cleanup()

        assert report.sandboxes_removed >= 1
        assert provider.find(stopped.session_id) is None
        assert running.refresh() is SandboxStatus.RUNNING

    # Exec

    def test_exec_exit_codes(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """exec returns the command's exit status."""
        _skip_unless(provider, "exec")
        sandbox = create()

        assert sandbox.exec(["true"]).exit_code == 0
        assert sandbox.exec(["sh", "-c", "exit 3"]).exit_code == 3
        assert sandbox.exec(["sh", "-c", "exit 3"]).ok is False

    def test_exec_streams_apart(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """stdout and stderr come back separately, and argv is not run through a shell."""
        _skip_unless(provider, "exec")
        sandbox = create()

        result = sandbox.exec(["sh", "-c", "echo out; echo err >&2; echo out2"])
        literal = sandbox.exec(["echo", "$HOME", "`id`", "a;b"])

        assert result.stdout == b"out\nout2\n"
        assert result.stderr == b"err\n"
        assert literal.stdout == b"$HOME `id` a;b\n"

    def test_exec_stdin_env_workdir(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """stdin, env and workdir reach the command."""
        _skip_unless(provider, "exec")
        sandbox = create()

        piped = sandbox.exec(["cat"], stdin=b"line one\nline two\n")
        env = sandbox.exec(["sh", "-c", 'printf %s "$CONTRACT_VAR"'], env={"CONTRACT_VAR": "a b\tc"})
        workdir = sandbox.exec(["pwd"], workdir="/tmp")

        assert piped.stdout == b"line one\nline two\n"
        assert env.stdout == b"a b\tc"
        assert workdir.stdout.strip() == b"/tmp"

    def test_exec_default_workdir_is_workspace(
        self, provider: SandboxProvider, make_spec: SpecFactory, sandboxes: list[Sandbox]
    ) -> None:
        """A file written in exec's default folder appears in the host workspace."""
        _skip_unless(provider, "exec")
        spec = make_spec()
        sandbox = provider.create(spec)
        sandboxes.append(sandbox)

        _sh(sandbox, "printf 'from the sandbox' > contract-note.txt")

        assert spec.workspace is not None
        assert (spec.workspace / "contract-note.txt").read_text() == "from the sandbox"

    def test_exec_timeout_kills_inside(
        self, provider: SandboxProvider, create: Callable[..., Sandbox]
    ) -> None:
        """A timed-out command is killed inside the sandbox, not only abandoned by the client."""
        _skip_unless(provider, "exec")
        sandbox = create()
        pid_file = f"/tmp/contract-{sandbox.session_id}.pid"

        result = sandbox.exec(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 120"], timeout=1.5)

        assert result.timed_out
        assert not result.ok
        check = sandbox.exec(
            ["sh", "-c", f'kill -0 "$(cat {pid_file})" 2>/dev/null && echo alive || echo gone']
        )
        assert check.stdout.strip() == b"gone"

    def test_exec_output_cap(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """Output past max_output is dropped and reported as truncated."""
        _skip_unless(provider, "exec")
        sandbox = create()

        capped = sandbox.exec(
            ["sh", "-c", "head -c 300000 /dev/zero; head -c 10 /dev/zero >&2"], max_output=1000
        )
        whole = sandbox.exec(["sh", "-c", "head -c 1000 /dev/zero"], max_output=1000)

        assert capped.truncated
        assert capped.stdout == b"\0" * 1000
        assert capped.stderr == b"\0" * 10
        assert capped.exit_code == 0
        assert not whole.truncated
        assert len(whole.stdout) == 1000

    # Attach

    def test_attach_round_trip(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """JSON lines go through the channel and come back whole, including one over 1 MiB."""
        _skip_unless(provider, "attach")
        sandbox = create(command=["cat"])
        big = "x" * (1024 * 1024 + 4096)
        messages: list[dict[str, Any]] = [
            {"type": "get_state", "id": "1"},
            {"type": "prompt", "message": "ünïcode \n inside"},
            {"type": "blob", "data": big},
            {"type": "after", "n": 3},
        ]

        with sandbox.attach() as channel:
            # Send from another thread: a process that echoes lines stops reading
            # its input while its own output waits to be read, so one thread doing
            # both would deadlock on any transport with bounded buffers.
            def send_all() -> None:
                for message in messages:
                    channel.send(message)

            sender = threading.Thread(target=send_all)
            sender.start()
            received = [channel.receive(timeout=60) for _ in messages]
            sender.join(timeout=60)

        assert received == messages
        assert sandbox.refresh() is SandboxStatus.RUNNING

    def test_attach_again_after_close(
        self, provider: SandboxProvider, create: Callable[..., Sandbox]
    ) -> None:
        """Closing a channel leaves the process running, and a new channel reaches it."""
        _skip_unless(provider, "attach")
        sandbox = create(command=["cat"])

        with sandbox.attach() as first:
            first.send({"n": 1})
            assert first.receive(timeout=30) == {"n": 1}
        with sandbox.attach() as second:
            second.send({"n": 2})
            assert second.receive(timeout=30) == {"n": 2}

    # Pause and resume

    def test_pause_resume(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """Pause freezes the sandbox, resume continues the same processes."""
        _skip_unless(provider, "lossless_pause")
        sandbox = create(command=["cat"]) if provider.capabilities.attach else create()

        if provider.capabilities.attach:
            with sandbox.attach() as channel:
                channel.send({"before": True})
                assert channel.receive(timeout=30) == {"before": True}
                sandbox.pause()
                assert sandbox.refresh() is SandboxStatus.PAUSED
                sandbox.resume()
                channel.send({"after": True})
                assert channel.receive(timeout=30) == {"after": True}
        else:
            sandbox.pause()
            assert sandbox.refresh() is SandboxStatus.PAUSED
            sandbox.resume()
        assert sandbox.refresh() is SandboxStatus.RUNNING

    def test_stop_start_keeps_workspace(
        self, provider: SandboxProvider, create: Callable[..., Sandbox]
    ) -> None:
        """Files in the workspace survive stop and resume."""
        _skip_unless(provider, "stop_start", "exec", "persistent_disk")
        sandbox = create()
        _sh(sandbox, "echo kept > kept.txt")

        sandbox.stop(timeout=1)
        assert sandbox.refresh() is SandboxStatus.STOPPED
        sandbox.resume()

        assert sandbox.refresh() is SandboxStatus.RUNNING
        assert _sh(sandbox, "cat kept.txt") == "kept\n"

    # Secrets

    def test_secrets_readable_as_files(
        self, provider: SandboxProvider, create: Callable[..., Sandbox]
    ) -> None:
        """Each secret is a file named in the manifest and contains the exact bytes."""
        _skip_unless(provider, "secret_files", "exec")
        values = {f"CONTRACT_KEY_{i}": contract_canary() + shape for i, shape in enumerate(_SECRET_SHAPES)}
        sandbox = create(secrets=SecretMaterial(values))

        manifest = _sh(sandbox, 'cat "$PI_SECRETS_DIR/manifest"')
        entries = dict(line.split("\t") for line in manifest.splitlines())

        assert sorted(entries) == sorted(values)
        for name, file_name in entries.items():
            assert "/" not in file_name
            read = sandbox.exec(["sh", "-c", f'cat "$PI_SECRETS_DIR/{file_name}"'])
            assert read.stdout == values[name].encode(), f"{name} did not arrive byte-exact"

    def test_secrets_absent_from_listings_and_errors(
        self, provider: SandboxProvider, create: Callable[..., Sandbox], make_spec: SpecFactory
    ) -> None:
        """Secret values appear in no listing, repr, status record or error."""
        _skip_unless(provider, "secret_files")
        canary = contract_canary()
        material = SecretMaterial({"CONTRACT_TOKEN": canary})
        sandbox = create(secrets=material)

        with pytest.raises(PiSandboxError) as duplicate:
            provider.create(make_spec(session_id=sandbox.session_id), material)
        texts = [
            repr(sandbox),
            repr(provider),
            repr(material),
            str(material),
            repr(provider.list()),
            json.dumps([info.labels for info in provider.list()]),
            str(duplicate.value),
            repr(duplicate.value),
            sandbox.logs(),
        ]

        for text in texts:
            assert canary not in text

    def test_resume_replaces_secrets(self, provider: SandboxProvider, create: Callable[..., Sandbox]) -> None:
        """Resume with a new set removes dropped secrets and adds new ones."""
        _skip_unless(provider, "secret_files", "exec", "lossless_pause")
        first, second, third = contract_canary("a"), contract_canary("b"), contract_canary("c")
        sandbox = create(secrets=SecretMaterial({"KEY_A": first, "KEY_B": second}))

        sandbox.pause()
        sandbox.resume(SecretMaterial({"KEY_A": first, "KEY_C": third}))
        manifest = _sh(sandbox, 'cat "$PI_SECRETS_DIR/manifest"')
        contents = _sh(sandbox, 'cat "$PI_SECRETS_DIR"/s-*')

        assert sorted(line.split("\t")[0] for line in manifest.splitlines()) == ["KEY_A", "KEY_C"]
        assert second not in contents
        assert first in contents
        assert third in contents

        sandbox.pause()
        sandbox.resume(SecretMaterial())
        assert _sh(sandbox, 'cat "$PI_SECRETS_DIR/manifest"') == ""
        assert _sh(sandbox, 'ls "$PI_SECRETS_DIR"').split() == ["manifest"]
