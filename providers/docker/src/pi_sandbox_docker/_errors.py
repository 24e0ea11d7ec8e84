"""Errors that only the Docker provider raises."""

from __future__ import annotations

from pi_sandbox import PiSandboxError


class ContainerNameTakenError(PiSandboxError, FileExistsError):
    """The container name for a session belongs to a container pi-sandbox did not create.

    Attributes:
        name: The container name, ``pi-sandbox-<session id>``.
        container_id: The id of the container that has it.
    """

    def __init__(self, name: str, container_id: str) -> None:
        self.name = name
        self.container_id = container_id
        super().__init__(
            f"container name {name!r} is taken by container {container_id[:12]}, which "
            "pi-sandbox did not create (it lacks the dev.pi-sandbox.managed label); "
            "rename or remove that container, or use another session id"
        )


class DockerEngineError(PiSandboxError, RuntimeError):
    """The Docker engine rejected a request for a reason no other error describes.

    Attributes:
        action: What was being done.
        status_code: The engine's HTTP status, if any.
        explanation: The engine's message.
    """

    def __init__(self, action: str, status_code: int | None, explanation: str) -> None:
        self.action = action
        self.status_code = status_code
        self.explanation = explanation
        super().__init__(f"the Docker engine could not {action} (HTTP {status_code}): {explanation}")
