"""SessionSpec validates itself when built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pi_sandbox import InvalidSpecError, Mount, Resources, ResourceTier, SessionSpec


def build(**fields: Any) -> SessionSpec:
    return SessionSpec(**{"session_id": "s-1", **fields})


class TestSessionId:
    @pytest.mark.parametrize("session_id", ["a", "A-b_9", "x" * 64, "0"])
    def test_valid_ids_accepted(self, session_id: str) -> None:
        """Letters, digits, '-' and '_', 1 to 64 characters, are accepted."""
        assert build(session_id=session_id).session_id == session_id

    @pytest.mark.parametrize(
        "session_id", ["", "x" * 65, "a b", "a/b", "../x", "a.b", "é", "a\nb", "a\x00", 7, None]
    )
    def test_invalid_ids_rejected(self, session_id: object) -> None:
        """Anything else raises InvalidSpecError naming the field and the rule."""
        with pytest.raises(InvalidSpecError) as raised:
            build(session_id=session_id)

        assert raised.value.field == "session_id"
        assert "1 to 64" in raised.value.rule
        assert isinstance(raised.value, ValueError)


class TestMounts:
    @pytest.mark.parametrize(
        ("target", "rule"),
        [
            ("relative/path", "absolute"),
            ("/a/../b", "normalised"),
            ("/a//b", "normalised"),
            ("/a/", "normalised"),
            ("/a/.", "normalised"),
            ("/", "root"),
            ("/run/secrets", "/run/secrets"),
            ("/run/secrets/x", "/run/secrets"),
            ("/run", "/run/secrets"),
        ],
    )
    def test_bad_targets_rejected(self, target: str, rule: str, tmp_path: Path) -> None:
        """Targets must be absolute, normalised, not '/', and clear of /run/secrets."""
        with pytest.raises(InvalidSpecError) as raised:
            build(mounts=[Mount(tmp_path, target)])

        assert raised.value.field == "mounts[0].target"
        assert rule in raised.value.rule

    def test_duplicate_target_rejected(self, tmp_path: Path) -> None:
        """Two mounts on one target are rejected, naming the first."""
        with pytest.raises(InvalidSpecError) as raised:
            build(mounts=[Mount(tmp_path, "/data/x"), Mount(tmp_path, "/data/x")])

        assert raised.value.field == "mounts[1].target"
        assert "mounts[0]" in raised.value.rule

    def test_mount_on_workspace_rejected(self, tmp_path: Path) -> None:
        """A mount may not take the workspace's place; use the workspace field."""
        with pytest.raises(InvalidSpecError, match="workspace"):
            build(mounts=[Mount(tmp_path, "/workspace")])

    def test_relative_source_rejected(self) -> None:
        """Host sources must be absolute paths."""
        with pytest.raises(InvalidSpecError) as raised:
            build(mounts=[Mount("relative", "/data/x")])

        assert raised.value.field == "mounts[0].source"


class TestOtherFields:
    @pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B"])
    def test_bad_env_names_rejected(self, name: str) -> None:
        """Environment names must be identifiers."""
        with pytest.raises(InvalidSpecError, match="identifiers"):
            build(env={name: "x"})

    @pytest.mark.parametrize("name", ["PI_SESSION_ID", "PI_SECRETS_DIR", "PI_CODING_AGENT_DIR"])
    def test_provider_env_names_reserved(self, name: str) -> None:
        """The variables the provider sets cannot be overridden through env."""
        with pytest.raises(InvalidSpecError, match="set by the provider"):
            build(env={name: "x"})

    def test_command_as_string_rejected(self) -> None:
        """A command is an argv list, never one shell string."""
        with pytest.raises(InvalidSpecError, match="sequence"):
            build(command="pi --mode rpc")

    @pytest.mark.parametrize("user", ["0", "root", "0:0", "root:1000"])
    def test_root_user_rejected(self, user: str) -> None:
        """Sandboxes never run as root."""
        with pytest.raises(InvalidSpecError) as raised:
            build(user=user)

        assert raised.value.field == "user"

    def test_reserved_label_prefix_rejected(self) -> None:
        """Labels under dev.pi-sandbox. belong to the provider."""
        with pytest.raises(InvalidSpecError, match="reserved"):
            build(labels={"dev.pi-sandbox.owner": "me"})

    def test_resource_tiers_and_explicit_limits(self) -> None:
        """A tier name, a ResourceTier or Resources all become Resources."""
        assert build(resources="large").resources == ResourceTier.LARGE.resources()
        assert build(resources=ResourceTier.MEDIUM).resources.memory_mb == 4096
        assert build(resources=Resources(cpus=0.5, memory_mb=256, pids=64)).resources.cpus == 0.5

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"cpus": 0}, "resources.cpus"),
            ({"memory_mb": 10}, "resources.memory_mb"),
            ({"pids": 1}, "resources.pids"),
        ],
    )
    def test_bad_limits_rejected(self, fields: dict[str, Any], field: str) -> None:
        """Limits below what any sandbox can run with are rejected."""
        with pytest.raises(InvalidSpecError) as raised:
            Resources(**fields)

        assert raised.value.field == field

    def test_unknown_tier_rejected(self) -> None:
        """An unknown tier name lists the known ones."""
        with pytest.raises(InvalidSpecError, match="small, medium, large"):
            build(resources="huge")

    def test_defaults_are_hardened(self) -> None:
        """By default a sandbox is non-root, drops capabilities and forbids new privileges."""
        spec = build()

        assert spec.user == "1000:1000"
        assert spec.hardening.drop_capabilities
        assert spec.hardening.no_new_privileges
        assert spec.command == ("pi", "--mode", "rpc")

    def test_to_json_is_stable(self, tmp_path: Path) -> None:
        """to_json sorts mappings, so equal specs hash equally."""
        first = build(env={"B": "2", "A": "1"}, mounts=[Mount(tmp_path, "/m")])
        second = build(env={"A": "1", "B": "2"}, mounts=[Mount(tmp_path, "/m")])

        assert first.to_json() == second.to_json()
        assert list(first.to_json()["env"]) == ["A", "B"]
