"""``pi-sandbox run`` as a subprocess, driven over its stdin and stdout, against the real pi image."""

from __future__ import annotations

import hashlib
import json
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from cli_helpers import CliResult, assert_absent, cli_command

pytestmark = pytest.mark.integration

Invoke = Callable[..., CliResult]

# Generous, because the first start of an image can be slow on a loaded host.
_RESPONSE_TIMEOUT = 120.0


class RunProcess:
    """A running ``pi-sandbox run``: send lines, read pi's messages, close, wait."""

    def __init__(self, argv: list[str], *, read_stdout: bool = True) -> None:
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stdout_lines: list[bytes] = []
        self.stderr = b""
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._stdout_reader = threading.Thread(
            target=self._read_stdout, args=(self.process.stdout,), daemon=True
        )
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, args=(self.process.stderr,), daemon=True
        )
        if read_stdout:
            self._stdout_reader.start()
        self._stderr_reader.start()

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.stdout_lines.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        self.stderr = stream.read()

    def send(self, data: bytes) -> None:
        """Write raw bytes to the process's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send_message(self, message: dict[str, Any]) -> None:
        """Write one JSON message as one line."""
        self.send(json.dumps(message).encode() + b"\n")

    def response(self, request_id: str) -> dict[str, Any]:
        """Return the next response with ``request_id``, skipping every other message."""
        while True:
            try:
                line = self.lines.get(timeout=_RESPONSE_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no response {request_id!r} within {_RESPONSE_TIMEOUT} seconds")
            if line is None:
                pytest.fail(f"stdout ended before response {request_id!r}; stderr: {self.stderr[-2000:]!r}")
            message = json.loads(line)
            if message.get("type") == "response" and message.get("id") == request_id:
                return dict(message)

    def close_stdin(self) -> None:
        """Close the process's stdin, as the end of a pipe does."""
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self) -> int:
        """Wait for the exit and for both output streams to end; return the exit code."""
        code = self.process.wait(timeout=_RESPONSE_TIMEOUT)
        if self._stdout_reader.is_alive():
            self._stdout_reader.join(timeout=10)
        self._stderr_reader.join(timeout=10)
        return code

    def messages(self) -> list[dict[str, Any]]:
        """Every line written to stdout so far, parsed; each must be a JSON object."""
        parsed = [json.loads(line) for line in self.stdout_lines]
        assert all(isinstance(message, dict) for message in parsed)
        return parsed


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace folder holding one marker file that the sandbox's user can read."""
    folder = tmp_path / "workspace"
    folder.mkdir(mode=0o755)
    (folder / "marker.txt").write_text("present\n")
    return folder


@pytest.fixture
def start_run(
    provider_options: list[str], workspace: Path, session_id: str
) -> Iterator[Callable[..., RunProcess]]:
    """Return a function that starts ``pi-sandbox run`` without network; kills leftovers after the test."""
    started: list[RunProcess] = []

    def start(*extra: str, read_stdout: bool = True) -> RunProcess:
        argv = [
            *cli_command(),
            *provider_options,
            "run",
            "--workspace",
            str(workspace),
            "--network",
            "none",
            "--session-id",
            session_id,
            *extra,
        ]
        run = RunProcess(argv, read_stdout=read_stdout)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@pytest.fixture
def containers_of(engine: Any) -> Callable[[str], list[str]]:
    """Return a function that lists the names of every container of a session, running or not."""

    def list_names(session_id: str) -> list[str]:
        filters = {"label": [f"dev.pi-sandbox.session-id={session_id}"]}
        return [container.name for container in engine.containers.list(all=True, filters=filters)]

    return list_names


class TestRunBridge:
    def test_get_state_then_eof(
        self,
        start_run: Callable[..., RunProcess],
        containers_of: Callable[[str], list[str]],
        session_id: str,
    ) -> None:
        """get_state gets a response with its id; closing stdin exits 0 and removes the sandbox."""
        run = start_run()

        run.send_message({"type": "get_state", "id": "1"})
        response = run.response("1")

        assert response["command"] == "get_state"
        assert response["success"] is True
        assert "sessionId" in response["data"]
        assert containers_of(session_id) == [f"pi-sandbox-{session_id}"]

        run.close_stdin()

        assert run.wait() == 0, run.stderr
        assert containers_of(session_id) == []
        run.messages()

    def test_secret_and_workspace_reach_pi(
        self,
        invoke: Invoke,
        start_run: Callable[..., RunProcess],
        canary: str,
    ) -> None:
        """pi's environment has the stored secret and /workspace has the folder; no output shows the value."""
        invoke("secrets", "set", "anthropic", "--env", "ANTHROPIC_API_KEY", input=canary + "\n")
        run = start_run()

        run.send_message(
            {
                "type": "bash",
                "id": "b",
                "command": 'printf %s "$ANTHROPIC_API_KEY" | sha256sum; cat /workspace/marker.txt',
            }
        )
        response = run.response("b")
        run.close_stdin()
        code = run.wait()

        assert code == 0, run.stderr
        output = response["data"]["output"]
        assert hashlib.sha256(canary.encode()).hexdigest() in output
        assert "present" in output
        everything = b"".join(run.stdout_lines) + run.stderr
        assert_absent(canary, everything.decode("utf-8", "replace"), "the output of pi-sandbox run")

    def test_burst_then_eof_gets_responses(
        self,
        start_run: Callable[..., RunProcess],
        containers_of: Callable[[str], list[str]],
        session_id: str,
    ) -> None:
        """Commands written together with the end of input all get responses before the sandbox stops."""
        run = start_run()
        burst = b"".join(
            json.dumps({"type": "get_state", "id": str(number)}).encode() + b"\n" for number in range(1, 4)
        )

        run.send(burst + b"this is not json\n" + b'{"type":"get_commands","id":"last"}')
        run.close_stdin()
        code = run.wait()

        assert code == 0, run.stderr
        responses = [message for message in run.messages() if message.get("type") == "response"]
        response_ids = {message.get("id") for message in responses}
        assert {"1", "2", "3", "last"} <= response_ids
        assert any(message["success"] is False and "id" not in message for message in responses)
        assert containers_of(session_id) == []

    def test_pi_arguments_after_double_dash(self, start_run: Callable[..., RunProcess]) -> None:
        """Arguments after -- reach pi: --no-session leaves no session file."""
        with_session = start_run()
        with_session.send_message({"type": "get_state", "id": "s"})
        state = with_session.response("s")["data"]
        with_session.close_stdin()
        assert with_session.wait() == 0, with_session.stderr

        without_session = start_run("--", "--no-session")
        without_session.send_message({"type": "get_state", "id": "s"})
        bare_state = without_session.response("s")["data"]
        without_session.close_stdin()
        assert without_session.wait() == 0, without_session.stderr

        assert str(state.get("sessionFile", "")).startswith("/data/agent/")
        assert not bare_state.get("sessionFile")

    @pytest.mark.parametrize(
        ("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"]
    )
    def test_signal_removes_sandbox(
        self,
        start_run: Callable[..., RunProcess],
        containers_of: Callable[[str], list[str]],
        session_id: str,
        signum: int,
        exit_code: int,
    ) -> None:
        """SIGTERM and Ctrl-C while stdin is still open remove the sandbox and exit with 128 + N."""
        run = start_run()
        run.send_message({"type": "get_state", "id": "1"})
        run.response("1")

        run.process.send_signal(signum)
        code = run.wait()

        assert code == exit_code, run.stderr
        assert b"interrupted; removed the sandbox" in run.stderr
        assert containers_of(session_id) == []

    def test_stdin_already_empty(
        self,
        start_run: Callable[..., RunProcess],
        containers_of: Callable[[str], list[str]],
        session_id: str,
    ) -> None:
        """With nothing on stdin, run starts pi, stops it, prints nothing and exits 0."""
        run = start_run()
        run.close_stdin()

        assert run.wait() == 0, run.stderr
        assert run.stdout_lines == []
        assert containers_of(session_id) == []

    def test_existing_session_is_an_error(
        self,
        start_run: Callable[..., RunProcess],
        containers_of: Callable[[str], list[str]],
        session_id: str,
    ) -> None:
        """A second run with the same session id fails with one error line and leaves the first alone."""
        first = start_run()
        first.send_message({"type": "get_state", "id": "1"})
        first.response("1")

        second = start_run()
        second.close_stdin()
        code = second.wait()

        lines = second.stderr.decode().splitlines()
        assert code == 1
        assert lines[0].startswith("error: ")
        assert "already exists" in lines[0]
        assert lines[1].startswith("hint: ")
        assert containers_of(session_id) == [f"pi-sandbox-{session_id}"]
        first.close_stdin()
        assert first.wait() == 0

    def test_pi_crash_is_an_error(
        self,
        start_run: Callable[..., RunProcess],
        containers_of: Callable[[str], list[str]],
        session_id: str,
    ) -> None:
        """pi failing while stdin is open exits 1 with one error line and removes the sandbox."""
        run = start_run("--", "--no-such-pi-option")

        code = run.wait()

        lines = run.stderr.decode().splitlines()
        assert code == 1
        assert lines[0].startswith("error: ")
        assert lines[1].startswith("hint: ")
        assert containers_of(session_id) == []

    def test_closed_stdout_removes_sandbox(
        self,
        start_run: Callable[..., RunProcess],
        containers_of: Callable[[str], list[str]],
        session_id: str,
    ) -> None:
        """When the reader of stdout goes away, run exits 1 and removes the sandbox."""
        run = start_run(read_stdout=False)
        stdout = run.process.stdout
        assert stdout is not None
        run.send_message({"type": "get_state", "id": "1"})
        assert json.loads(stdout.readline())["id"] == "1"

        stdout.close()
        run.send_message({"type": "get_state", "id": "2"})
        code = run.wait()

        assert code == 1
        assert b"standard output was closed" in run.stderr
        assert containers_of(session_id) == []
