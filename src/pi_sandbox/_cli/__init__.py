"""The ``pi-sandbox`` command line: secrets, sandboxes, and a sandboxed ``pi --mode rpc``.

The console script calls `main`; tests drive `cli` with click's runner.
"""

from __future__ import annotations

from ._app import cli, main
from ._doctor import doctor
from ._run import run
from ._sandbox_commands import cleanup, exec_command, list_sandboxes, providers, remove, stop
from ._secret_commands import secrets

for _command in (secrets, run, list_sandboxes, exec_command, stop, remove, cleanup, providers, doctor):
    cli.add_command(_command)

__all__ = ["cli", "main"]
