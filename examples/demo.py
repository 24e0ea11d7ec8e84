#!/usr/bin/env python3
"""Run the real pi in a Docker sandbox end to end, and print one line per step.

The demo builds the local image when needed, stores a random demo key in the
encrypted secret store, and creates a sandbox that receives only that key. It
then requests pi's state and available models over RPC, checks that the key
appears nowhere in the container's inspect JSON, and sends a prompt, which pi
passes to a mock Anthropic model on 127.0.0.1. Last, it terminates the
sandbox, checks that the secrets folder is gone, and deletes the demo key.

The store is the one `open_secret_store()` opens: ``$PI_SANDBOX_DATABASE_URL``,
or the embedded SQLite database in the user's data folder, whose key file is
generated (and logged) on first use. The key value is never printed.

Usage::

    python examples/demo.py [--label KEY=VALUE ...] [--verbose]

The exit status is 0 when every step passed and 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import secrets as random_tokens
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TypeVar

import docker

import pi_sandbox
from pi_sandbox.testing.mock_model import MockModelServer

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
BUILD_SCRIPT: Final = REPO_ROOT / "images" / "local" / "build.py"

DEMO_SECRET: Final = "pi-sandbox-demo"  # noqa: S105 - the secret's name, not its value
KEY_ENV_VAR: Final = "ANTHROPIC_API_KEY"
PROVIDER: Final = "anthropic"
PROMPT: Final = "Reply with one short sentence."
REPLY: Final = "pong from the mock model"
# The image's default user; the demo's folders are handed to it when the demo runs as root.
SANDBOX_USER: Final = (1000, 1000)
RPC_TIMEOUT: Final = 30.0
PROMPT_TIMEOUT: Final = 120.0

_T = TypeVar("_T")


class DemoError(Exception):
    """A demo step failed; the message states what was expected and what happened."""


class Demo:
    """The state the steps share: the store, the mock model, the sandbox and its channel."""

    def __init__(self, labels: dict[str, str], folder: Path) -> None:
        self.labels = labels
        self.folder = folder
        self.key = f"demo-{random_tokens.token_urlsafe(24)}"
        self.image = ""
        self.store: pi_sandbox.SecretStore | None = None
        self.server: MockModelServer | None = None
        self.provider: pi_sandbox.SandboxProvider | None = None
        self.sandbox: pi_sandbox.Sandbox | None = None
        self.channel: pi_sandbox.Channel | None = None
        self.secrets_dir: Path | None = None
        self._request_ids = itertools.count(1)

    # The steps. Each returns the detail printed after its check mark.

    def build_image(self) -> str:
        build = _load_build_script()
        try:
            self.image = build.ensure_image()
        except build.ImageBuildError as error:
            raise DemoError(str(error)) from None
        return f"{self.image} is ready"

    def open_store(self) -> str:
        self.store = pi_sandbox.open_secret_store()
        return self.store.url

    def store_key(self) -> str:
        try:
            _require(self.store).put(DEMO_SECRET, self.key, env_var=KEY_ENV_VAR)
        except pi_sandbox.InvalidSecretError as error:
            msg = f"{error}; or run the demo on another store by setting PI_SANDBOX_DATABASE_URL"
            raise DemoError(msg) from None
        return f"secret {DEMO_SECRET!r} for {KEY_ENV_VAR}: {len(self.key)} random characters, not shown"

    def start_model(self) -> str:
        self.server = MockModelServer(api_key=self.key, default_text=REPLY).start()
        return f"Anthropic Messages API at {self.server.base_url}, accepts only the stored key"

    def create_sandbox(self) -> str:
        store, server = _require(self.store), _require(self.server)
        workspace = self.folder / "workspace"
        agent_dir = self.folder / "agent"
        workspace.mkdir()
        agent_dir.mkdir()
        # pi reads models.json from its agent folder: it sends the anthropic
        # provider's requests to the mock model instead of the real API.
        (agent_dir / "models.json").write_text(json.dumps(server.pi_models_config(PROVIDER), indent=2))
        user = _hand_over([workspace, agent_dir])

        spec = pi_sandbox.SessionSpec(
            session_id=f"demo-{random_tokens.token_hex(4)}",
            workspace=workspace,
            agent_dir=agent_dir,
            # The mock model listens on the host's 127.0.0.1.
            network="host",
            user=user,
            command=["pi", "--mode", "rpc", "--offline", "--provider", PROVIDER, "--model", server.model_id],
        )
        self.provider = pi_sandbox.get_provider("docker", image=self.image, extra_labels=self.labels)
        # Only the demo key goes in, never the store's other secrets.
        self.sandbox = self.provider.create(spec, store.material(names=[DEMO_SECRET]))
        # Docker sandboxes name their secrets folder on the host; other providers may have none.
        self.secrets_dir = getattr(self.sandbox, "secrets_dir", None)
        self.channel = self.sandbox.attach()
        return f"container {self.sandbox.provider_id[:12]}, session {spec.session_id}, network host"

    def get_state(self) -> str:
        server = _require(self.server)
        data = self._request({"type": "get_state"})
        model = data.get("model") or {}
        # A prompt must never go to a real model provider.
        if model.get("baseUrl") != server.base_url:
            where = f"{model.get('provider')}/{model.get('id')} at {model.get('baseUrl')}"
            msg = f"pi's model is {where}, not the mock model"
            raise DemoError(msg)
        return f"model {model['provider']}/{model['id']}, session {data.get('sessionId')}"

    def get_available_models(self) -> str:
        server = _require(self.server)
        models = self._request({"type": "get_available_models"}).get("models") or []
        from_key = [m for m in models if m.get("provider") == PROVIDER]
        if not from_key:
            msg = f"pi lists {len(models)} available models and none of provider {PROVIDER}"
            raise DemoError(msg)
        if not any(m.get("id") == server.model_id for m in from_key):
            msg = f"pi does not list the mock model {server.model_id} as available"
            raise DemoError(msg)
        return (
            f"{len(from_key)} {PROVIDER} models are live through {KEY_ENV_VAR}, including {server.model_id}"
        )

    def check_inspect(self) -> str:
        sandbox = _require(self.sandbox)
        client = docker.from_env()
        try:
            inspected = json.dumps(client.api.inspect_container(sandbox.provider_id))
        finally:
            client.close()
        if self.key in inspected:
            msg = "the key appears in the container's inspect JSON"
            raise DemoError(msg)
        if f'"{KEY_ENV_VAR}=' in inspected:
            msg = f"{KEY_ENV_VAR} is set in the container's configuration"
            raise DemoError(msg)
        return (
            f"absent from {len(inspected):,} characters of `docker inspect`; {KEY_ENV_VAR} is not set there"
        )

    def prompt(self) -> str:
        server = _require(self.server)
        events = self._prompt(PROMPT)
        text, error = _final_assistant_text(events)
        if error:
            msg = f"pi reported a model error: {error}"
            raise DemoError(msg)
        if text != REPLY:
            msg = f"the final assistant text is {text!r}, expected {REPLY!r}"
            raise DemoError(msg)
        if server.rejected_count or not server.requests:
            accepted, rejected = len(server.requests), server.rejected_count
            msg = f"the mock model accepted {accepted} requests and rejected {rejected}"
            raise DemoError(msg)
        return (
            f"reply {text!r}; the mock accepted {len(server.requests)} request with the "
            f"stored key and rejected none\n{len(events)} events: {_summarize(events)}"
        )

    def terminate(self) -> str:
        if self.sandbox is None:
            return "no sandbox was created"
        if self.channel is not None:
            self.channel.close()
        self.sandbox.terminate()
        if self.secrets_dir is None:
            return "sandbox removed (the provider reports no secrets folder)"
        if self.secrets_dir.exists():
            msg = f"the secrets folder {self.secrets_dir} is still on the host"
            raise DemoError(msg)
        return f"sandbox removed, and its secrets folder {self.secrets_dir} is gone from the host"

    def delete_key(self) -> str:
        if self.store is None:
            return "no store was opened"
        try:
            self.store.delete(DEMO_SECRET)
        except pi_sandbox.SecretNotFoundError:
            return f"the store has no secret {DEMO_SECRET!r} to delete"
        return f"secret {DEMO_SECRET!r} deleted, so the next run starts clean"

    def close(self) -> None:
        """Release what is left without reporting: the mock model, the provider, the store."""
        if self.server is not None:
            self.server.stop()
        if self.provider is not None:
            self.provider.close()
        if self.store is not None:
            self.store.close()

    # RPC helpers

    def _request(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one RPC command and return its response's data, skipping events."""
        channel = _require(self.channel)
        request_id = f"demo-{next(self._request_ids)}"
        channel.send({**command, "id": request_id})
        deadline = time.monotonic() + RPC_TIMEOUT
        while True:
            message = channel.receive(timeout=max(0.0, deadline - time.monotonic()))
            if message.get("type") == "response" and message.get("id") == request_id:
                break
        if not message.get("success"):
            msg = f"pi rejected {command['type']}: {message.get('error')}"
            raise DemoError(msg)
        data = message.get("data")
        return data if isinstance(data, dict) else {}

    def _prompt(self, text: str) -> list[dict[str, Any]]:
        """Send a prompt and return the events up to ``agent_end``."""
        channel = _require(self.channel)
        self._request({"type": "prompt", "message": text})
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + PROMPT_TIMEOUT
        while not events or events[-1].get("type") != "agent_end":
            events.append(channel.receive(timeout=max(0.0, deadline - time.monotonic())))
        return events


def _require(value: _T | None) -> _T:
    """Return ``value``, which an earlier step made; the steps stop at the first failure."""
    if value is None:
        msg = "an earlier step did not finish"
        raise DemoError(msg)
    return value


def _load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pi_sandbox_local_image_build", BUILD_SCRIPT)
    if spec is None or spec.loader is None:
        msg = f"cannot load {BUILD_SCRIPT}; run the demo from a checkout of pi-sandbox"
        raise DemoError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hand_over(folders: list[Path]) -> str:
    """Make ``folders`` writable by the sandbox's user and return that user.

    As root, the folders go to the image's user; otherwise the sandbox runs as
    the caller, who owns them already.
    """
    if os.geteuid() == 0:
        for folder in folders:
            os.chown(folder, *SANDBOX_USER)
        return "{}:{}".format(*SANDBOX_USER)
    return f"{os.getuid()}:{os.getgid()}"


def _final_assistant_text(events: list[dict[str, Any]]) -> tuple[str, str | None]:
    """Return the text of the last assistant message and its error message, if any."""
    for event in reversed(events):
        message = event.get("message") or {}
        if event.get("type") == "message_end" and message.get("role") == "assistant":
            text = "".join(
                block.get("text", "") for block in message.get("content") or [] if block.get("type") == "text"
            )
            return text, message.get("errorMessage")
    return "", "pi sent no assistant message"


def _summarize(events: list[dict[str, Any]]) -> str:
    """Name each event type once, in order of first appearance, with its count."""
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        kind = str(event.get("type"))
        if kind == "message_update":
            kind = f"message_update/{(event.get('assistantMessageEvent') or {}).get('type')}"
        counts[kind] += 1
    return ", ".join(kind if count == 1 else f"{kind} x{count}" for kind, count in counts.items())


class Report:
    """Prints one line per step: a mark, the step's name, its detail and its duration."""

    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0
        self.skipped = 0
        self._start = time.perf_counter()

    def run(self, name: str, step: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            detail = step()
        except Exception as error:  # every failure is reported, then the demo goes on to clean up
            self.failed += 1
            described = str(error) if isinstance(error, DemoError) else f"{type(error).__name__}: {error}"
            self._line("✗", name, described, started)
            return False
        self.passed += 1
        self._line("✓", name, detail, started)
        return True

    def skip(self, name: str) -> None:
        self.skipped += 1
        print(f"  - {name:<24} {'':8}  skipped after the failure above", flush=True)

    def _line(self, mark: str, name: str, detail: str, started: float) -> None:
        first, *rest = detail.splitlines() or [""]
        print(f"  {mark} {name:<24} {time.perf_counter() - started:6.2f} s  {first}", flush=True)
        for line in rest:
            print(f"{'':39}{line}", flush=True)

    def summary(self) -> str:
        elapsed = time.perf_counter() - self._start
        if self.failed:
            run = self.failed + self.passed
            return f"{self.failed} of {run} steps failed, {self.skipped} skipped ({elapsed:.1f} s)."
        return f"All {self.passed} steps passed in {elapsed:.1f} s."


def _parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        msg = f"{text!r} must be KEY=VALUE"
        raise argparse.ArgumentTypeError(msg)
    return key, value


def _configure_logging(verbose: bool) -> None:
    # Standard output, so that log lines appear between the step lines they belong to.
    logging.basicConfig(level=logging.WARNING, format="    log: %(name)s: %(message)s", stream=sys.stdout)
    # The store logs at INFO where it wrote a newly generated key file.
    logging.getLogger("pi_sandbox.store").setLevel(logging.INFO)
    if verbose:
        logging.getLogger("pi_sandbox").setLevel(logging.DEBUG)


@contextlib.contextmanager
def _demo_folder() -> Iterator[Path]:
    # The sandbox's user may leave files the caller cannot remove; those stay in the temporary folder.
    with tempfile.TemporaryDirectory(prefix="pi-sandbox-demo-", ignore_cleanup_errors=True) as folder:
        yield Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--label",
        action="append",
        type=_parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="add a label to the demo's container (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="show pi-sandbox's debug log")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    print("pi-sandbox demo: the real pi in a Docker sandbox, a key from the encrypted store,")
    print("and a mock model on 127.0.0.1\n", flush=True)
    report = Report()
    with _demo_folder() as folder:
        demo = Demo(dict(args.label), folder)
        steps: list[tuple[str, Callable[[], str]]] = [
            ("image", demo.build_image),
            ("secret store", demo.open_store),
            ("store the key", demo.store_key),
            ("mock model", demo.start_model),
            ("create sandbox", demo.create_sandbox),
            ("RPC get_state", demo.get_state),
            ("RPC get_available_models", demo.get_available_models),
            ("docker inspect", demo.check_inspect),
            ("RPC prompt", demo.prompt),
        ]
        try:
            for index, (name, step) in enumerate(steps):
                if not report.run(name, step):
                    for skipped, _ in steps[index + 1 :]:
                        report.skip(skipped)
                    break
        finally:
            report.run("terminate", demo.terminate)
            report.run("delete the key", demo.delete_key)
            demo.close()

    print(f"\n{report.summary()}", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
