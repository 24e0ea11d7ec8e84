"""An example pi-sandbox provider: each session is a local process group.

It isolates nothing and exists to show how a provider plugin is built and to
exercise the provider contract suite without a container engine.
"""

from ._provider import ProcessProvider, ProcessSandbox

__all__ = ["ProcessProvider", "ProcessSandbox"]
