"""The Docker provider for pi-sandbox: one hardened container per session.

Most code gets it through ``pi_sandbox.get_provider("docker", ...)``; import
`DockerProvider` from here to configure it directly. Importing this package
does not import the docker SDK; the names below load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import ContainerNameTakenError, DockerEngineError
from ._secretfiles import DEFAULT_SECRETS_GID

if TYPE_CHECKING:
    from ._engine import ContainerState
    from ._provider import DockerProvider
    from ._sandbox import DockerSandbox
    from ._stream import DockerChannel

__all__ = [
    "DEFAULT_SECRETS_GID",
    "ContainerNameTakenError",
    "ContainerState",
    "DockerChannel",
    "DockerEngineError",
    "DockerProvider",
    "DockerSandbox",
]

_LAZY = {
    "ContainerState": "._engine",
    "DockerChannel": "._stream",
    "DockerProvider": "._provider",
    "DockerSandbox": "._sandbox",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # noqa: PLC0415 - loads docker only when a name is used

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
