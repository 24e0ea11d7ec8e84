"""Pull progress bars: the display the CLI gives the Docker provider's pull_progress callback."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pi_sandbox._cli import _context
from pi_sandbox._cli._context import Settings
from pi_sandbox._cli._progress import PullProgress

# The record shapes of the engine's pull stream (Docker Engine API, POST /images/create).
PULL_RECORDS = [
    {"status": "Pulling from library/debian", "id": "12"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Downloading", "progressDetail": {"current": 1000, "total": 4000}, "id": "a1b2c3d4e5f6"},
    {"status": "Downloading", "progressDetail": {"current": 4000, "total": 4000}, "id": "a1b2c3d4e5f6"},
    {"status": "Pull complete", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Digest: sha256:0123"},
    {"status": "Status: Downloaded newer image for debian:12"},
]


def make_display() -> tuple[PullProgress, io.StringIO]:
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=120)
    return PullProgress(console), output


class TestPullProgress:
    def test_layers_and_status_lines_shown(self) -> None:
        """Each layer gets a line with its id and last status; digest and status lines print as they come."""
        display, output = make_display()

        for record in PULL_RECORDS:
            display(record)

        text = output.getvalue()
        assert "a1b2c3d4e5f6 Pull complete" in text
        assert "Digest: sha256:0123" in text
        assert "Status: Downloaded newer image for debian:12" in text

    def test_final_status_ends_display(self) -> None:
        """The engine's closing Status line stops the live display."""
        display, _ = make_display()

        for record in PULL_RECORDS:
            display(record)

        assert display._progress.live.is_started is False

    def test_layer_total_reaches_completion(self) -> None:
        """A finished layer's bar shows its full size."""
        display, _ = make_display()

        for record in PULL_RECORDS[:5]:
            display(record)
        task = display._progress.tasks[-1]
        display.close()

        assert task.total == 4000
        assert task.completed == 4000


class TestProviderWiring:
    def test_docker_gets_progress_on_terminal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a terminal, the CLI's Docker provider reports pulls to a PullProgress."""
        monkeypatch.setattr(_context, "stderr_is_terminal", lambda: True)

        provider = Settings().provider("docker")

        assert isinstance(provider._pull_progress, PullProgress)  # type: ignore[attr-defined]

    def test_no_progress_when_piped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a terminal on standard error, nothing draws bars."""
        monkeypatch.setattr(_context, "stderr_is_terminal", lambda: False)

        provider = Settings().provider("docker")

        assert provider._pull_progress is None  # type: ignore[attr-defined]
