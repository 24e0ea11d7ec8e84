"""Constants and helpers the end-to-end tests and their fixtures share."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from pi_sandbox import Channel
from pi_sandbox_docker import DockerSandbox

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_LABEL = "dev.pi-sandbox.test"
RUN_LABEL = "dev.pi-sandbox.test-run"
KEY_ENV_VAR = "ANTHROPIC_API_KEY"
SECRET_NAME = "anthropic"
# The image's default user, to whom the test folders are handed when the tests run as root.
SANDBOX_USER = (1000, 1000)
RPC_TIMEOUT = 30.0
PROMPT_TIMEOUT = 120.0


def assert_absent(value: str, text: str, where: str) -> None:
    """Fail, without printing either, when the secret ``value`` occurs in ``text``."""
    if value in text:
        pytest.fail(f"a secret value appears in {where}", pytrace=False)


def hand_over(folder: Path) -> str:
    """Make ``folder`` writable by the sandbox's user and return that user for the spec."""
    if os.geteuid() == 0:
        os.chown(folder, *SANDBOX_USER)
        return "{}:{}".format(*SANDBOX_USER)
    return f"{os.getuid()}:{os.getgid()}"


@attrs.define
class PiSession:
    """A sandbox running ``pi --mode rpc``, its channel and its host folders."""

    sandbox: DockerSandbox
    channel: Channel
    workspace: Path
    agent_dir: Path
    _ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def request(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Send one RPC command and return its response, skipping the events before it."""
        request_id = f"test-{next(self._ids)}"
        self.channel.send({**command, "id": request_id})
        deadline = time.monotonic() + RPC_TIMEOUT
        while True:
            message = self.channel.receive(timeout=max(0.0, deadline - time.monotonic()))
            if message.get("type") == "response" and message.get("id") == request_id:
                return message

    def prompt(self, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Send a prompt; return its response and the events up to ``agent_end``."""
        response = self.request({"type": "prompt", "message": text})
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + PROMPT_TIMEOUT
        while not events or events[-1].get("type") != "agent_end":
            events.append(self.channel.receive(timeout=max(0.0, deadline - time.monotonic())))
        return response, events
