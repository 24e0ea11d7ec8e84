"""Plugin discovery, conflicts, blocking and the hooks."""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pi_sandbox_example import ProcessProvider

import pi_sandbox
from pi_sandbox import (
    PluginConflictError,
    PluginManager,
    ProviderNotFoundError,
    SandboxEvent,
    SessionSpec,
    get_provider,
    hookimpl,
    hookspecs,
)
from pi_sandbox.hookspecs import ProviderRegistrar

ROOT = Path(__file__).resolve().parents[1]


def run_python(script: str, env: dict[str, str] | None = None, path: Path | None = None) -> str:
    full_env = {**os.environ, **(env or {})}
    if path is not None:
        full_env["PYTHONPATH"] = str(path)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=full_env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_distribution(site: Path, dist: str, module: str, provider: str) -> None:
    """Write a real, minimal installed distribution with a pi_sandbox entry point."""
    (site / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from pi_sandbox import hookimpl

            @hookimpl
            def register_providers(register):
                register({provider!r}, lambda **config: None)
            """
        )
    )
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pi_sandbox]\n{module} = {module}\n")


class TestDiscovery:
    def test_example_plugin_discovered(self) -> None:
        """The example distribution's entry point registers the 'example' provider."""
        assert "example" in pi_sandbox.available_providers()
        assert pi_sandbox.plugin_manager().provider_distribution("example") == "pi-sandbox-example"

    def test_unknown_name_lists_installed(self) -> None:
        """An unknown provider name raises ProviderNotFoundError listing what is installed."""
        with pytest.raises(ProviderNotFoundError) as raised:
            get_provider("no-such")

        assert isinstance(raised.value, LookupError)
        assert raised.value.installed == tuple(pi_sandbox.available_providers())
        for name in pi_sandbox.available_providers():
            assert name in str(raised.value)
        assert "'no-such'" in str(raised.value)

    def test_sandbox_provider_env_picks_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no name given, $SANDBOX_PROVIDER chooses the provider."""
        monkeypatch.setenv("SANDBOX_PROVIDER", "example")

        assert isinstance(get_provider(), ProcessProvider)

    def test_config_reaches_factory(self, tmp_path: Path) -> None:
        """Keyword configuration passes through get_provider to the plugin's factory."""
        provider = get_provider("example", root=tmp_path / "r")

        assert isinstance(provider, ProcessProvider)
        assert provider.root == tmp_path / "r"

    def test_two_distributions_one_name_conflict(self, tmp_path: Path) -> None:
        """Two installed distributions registering one name raise an error naming both."""
        make_distribution(tmp_path, "pi-sandbox-first", "first_plugin", "shared-name")
        make_distribution(tmp_path, "pi-sandbox-second", "second_plugin", "shared-name")
        script = textwrap.dedent(
            """
            import pi_sandbox
            try:
                pi_sandbox.available_providers()
            except pi_sandbox.PluginConflictError as error:
                print(error)
            """
        )

        output = run_python(script, path=tmp_path)

        assert "'shared-name'" in output
        assert "pi-sandbox-first" in output
        assert "pi-sandbox-second" in output

    @pytest.mark.parametrize("blocked", ["example", "pi-sandbox-example", "other, example"])
    def test_disable_plugins_blocks(self, blocked: str) -> None:
        """PI_SANDBOX_DISABLE_PLUGINS blocks a plugin by entry-point or distribution name."""
        script = "import json, pi_sandbox; print(json.dumps(pi_sandbox.available_providers()))"

        names = json.loads(run_python(script, env={"PI_SANDBOX_DISABLE_PLUGINS": blocked}))

        assert "example" not in names

    def test_invalid_provider_name_rejected(self) -> None:
        """A plugin registering a name with a space gets a ValueError naming its distribution."""

        class BadPlugin:
            @hookimpl
            def register_providers(self, register: ProviderRegistrar) -> None:
                register("has space", ProcessProvider)

        manager = PluginManager()
        manager.register(BadPlugin(), name="bad", distribution="pi-sandbox-bad")

        with pytest.raises(ValueError, match="pi-sandbox-bad"):
            manager.provider_names()

    def test_conflict_in_one_manager(self) -> None:
        """Plugin objects registered in code conflict the same way entry points do."""

        class FirstPlugin:
            @hookimpl
            def register_providers(self, register: ProviderRegistrar) -> None:
                register("same", ProcessProvider)

        class SecondPlugin(FirstPlugin):
            pass

        manager = PluginManager()
        manager.register(FirstPlugin(), name="one", distribution="dist-one")
        manager.register(SecondPlugin(), name="two", distribution="dist-two")

        with pytest.raises(PluginConflictError) as raised:
            manager.provider_names()

        assert "dist-one" in str(raised.value)
        assert "dist-two" in str(raised.value)


class EventCollector:
    def __init__(self) -> None:
        self.events: list[SandboxEvent] = []

    @hookimpl
    def sandbox_event(self, event: SandboxEvent) -> None:
        self.events.append(event)


class FailingObserver:
    @hookimpl
    def sandbox_event(self, event: SandboxEvent) -> None:
        raise RuntimeError("observer bug")


class TestSandboxEventHook:
    def test_observer_sees_lifecycle(self, tmp_path: Path) -> None:
        """A host's sandbox_event hook receives created, paused, resumed, stopped and terminated."""
        collector = EventCollector()
        pi_sandbox.register_plugin(collector)
        provider = get_provider("example", root=tmp_path / "r")
        try:
            sandbox = provider.create(SessionSpec(session_id="events-1", command=["sleep", "60"]))
            sandbox.pause()
            sandbox.resume()
            sandbox.stop(timeout=1)
            sandbox.terminate(timeout=1)
        finally:
            pi_sandbox.plugin_manager().unregister(collector)

        kinds = [event.kind for event in collector.events]
        assert kinds == ["created", "paused", "resumed", "stopped", "terminated"]
        assert {event.session_id for event in collector.events} == {"events-1"}
        assert {event.provider for event in collector.events} == {"example"}

    def test_failed_create_reported_with_error(self, tmp_path: Path) -> None:
        """A failed create reports 'failed' with the error before raising it."""
        collector = EventCollector()
        pi_sandbox.register_plugin(collector)
        provider = get_provider("example", root=tmp_path / "r")
        try:
            with pytest.raises(pi_sandbox.InvalidSpecError) as raised:
                provider.create(
                    SessionSpec(session_id="events-2", mounts=[pi_sandbox.Mount(tmp_path / "gone", "/m")])
                )
        finally:
            pi_sandbox.plugin_manager().unregister(collector)

        assert [event.kind for event in collector.events] == ["failed"]
        assert collector.events[0].error is raised.value
        assert collector.events[0].provider_id is None

    def test_observer_failure_logged_not_raised(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An exception in an observer is logged as a warning and the operation goes on."""
        observer = FailingObserver()
        pi_sandbox.register_plugin(observer)
        provider = get_provider("example", root=tmp_path / "r")
        try:
            with caplog.at_level(logging.WARNING, logger="pi_sandbox"):
                sandbox = provider.create(SessionSpec(session_id="events-3", command=["sleep", "60"]))
            sandbox.terminate(timeout=1)
        finally:
            pi_sandbox.plugin_manager().unregister(observer)

        assert "sandbox_event hook failed for created of session events-3" in caplog.text
        assert "observer bug" in caplog.text


class TestHookDocumentation:
    def hook_names(self) -> list[str]:
        return [
            name
            for name, value in vars(hookspecs).items()
            if inspect.isfunction(value) and hasattr(value, "pi_sandbox_spec")
        ]

    def test_hooks_found(self) -> None:
        """The hookspec module declares the two hooks."""
        assert sorted(self.hook_names()) == ["register_providers", "sandbox_event"]

    def test_every_hook_documented_with_signature(self) -> None:
        """docs/plugins.md shows each hook's full signature."""
        page = (ROOT / "docs" / "plugins.md").read_text()

        for name in self.hook_names():
            spec = inspect.signature(getattr(hookspecs, name))
            parameters = ", ".join(f"{p.name}: {p.annotation}" for p in spec.parameters.values())
            signature = f"{name}({parameters}) -> {spec.return_annotation}"
            assert signature in page, f"docs/plugins.md lacks {signature}"

    def test_every_hook_has_a_test(self) -> None:
        """Each hook maps to a test class here with tests; a new hook must add one."""
        tested = {"register_providers": TestDiscovery, "sandbox_event": TestSandboxEventHook}

        assert sorted(tested) == sorted(self.hook_names())
        for test_class in tested.values():
            assert [name for name in vars(test_class) if name.startswith("test_")]
