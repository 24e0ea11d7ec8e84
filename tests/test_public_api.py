"""The public facade: what `import pi_sandbox` offers and what it does not load."""

from __future__ import annotations

import json
import subprocess
import sys

import pi_sandbox

DESIGNED_NAMES = {
    "SessionSpec",
    "Mount",
    "Resources",
    "ResourceTier",
    "SandboxStatus",
    "Capabilities",
    "SandboxInfo",
    "ExecResult",
    "SecretValue",
    "SecretMaterial",
    "SandboxProvider",
    "Sandbox",
    "Channel",
    "get_provider",
    "available_providers",
    "hookimpl",
    "PiSandboxError",
    "ProviderNotFoundError",
}


class TestPublicApi:
    def test_all_holds_designed_names(self) -> None:
        """__all__ lists every name the design promises, and each one resolves."""
        assert set(pi_sandbox.__all__) >= DESIGNED_NAMES
        for name in pi_sandbox.__all__:
            assert hasattr(pi_sandbox, name), name

    def test_all_is_sorted(self) -> None:
        """__all__ is sorted, so additions land in one obvious place."""
        assert pi_sandbox.__all__ == sorted(pi_sandbox.__all__)

    def test_import_does_not_load_docker(self) -> None:
        """Importing the core, even listing providers, loads neither docker nor SQLAlchemy."""
        script = (
            "import sys, json, pi_sandbox; pi_sandbox.available_providers(); "
            "print(json.dumps([m for m in ('docker', 'sqlalchemy') if m in sys.modules]))"
        )

        output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

        assert json.loads(output.stdout) == []

    def test_errors_share_one_base(self) -> None:
        """Every exported error class derives from PiSandboxError."""
        errors = [getattr(pi_sandbox, n) for n in pi_sandbox.__all__ if n.endswith("Error")]

        assert len(errors) > 10
        for error in errors:
            assert issubclass(error, pi_sandbox.PiSandboxError), error.__name__

    def test_version_from_metadata(self) -> None:
        """__version__ is the installed distribution's version."""
        from importlib.metadata import version

        assert pi_sandbox.__version__ == version("pi-sandbox")
