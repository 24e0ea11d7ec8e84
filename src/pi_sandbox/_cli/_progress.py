"""Progress bars on standard error for image pulls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

__all__ = ["PullProgress"]


class PullProgress:
    """Show one bar per image layer from the Docker engine's pull records.

    Pass an instance as the Docker provider's ``pull_progress`` callback. Each
    record is one line of the engine's pull stream, such as ``{"id": "a1b2",
    "status": "Downloading", "progressDetail": {"current": 10, "total": 99}}``.
    Records without a layer id (the digest and status lines) are printed as
    plain lines. The engine's closing ``Status: ...`` line, or `close`, ends the
    display.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._totals: dict[str, int] = {}
        self._started = False

    def __call__(self, record: Mapping[str, Any]) -> None:
        """Update the display with one pull record."""
        if not self._started:
            self._progress.start()
            self._started = True
        layer = record.get("id")
        status = str(record.get("status", ""))
        if not layer or not isinstance(layer, str):
            if status:
                self._progress.console.print(status, highlight=False)
            if status.startswith("Status:") or "error" in record:
                self.close()
            return

        detail = record.get("progressDetail") or {}
        total = detail.get("total") if isinstance(detail, Mapping) else None
        current = detail.get("current") if isinstance(detail, Mapping) else None
        description = f"{layer[:12]} {status}"
        if layer not in self._tasks:
            self._tasks[layer] = self._progress.add_task(description, total=total or None)
        task = self._tasks[layer]
        self._progress.update(task, description=description)
        if isinstance(total, int) and total > 0:
            self._totals[layer] = total
            self._progress.update(task, total=total)
        if isinstance(current, int):
            self._progress.update(task, completed=current)
        if status in {"Pull complete", "Already exists", "Download complete"}:
            self._progress.update(task, completed=self._totals.get(layer, 0))

    def close(self) -> None:
        """Stop redrawing; the bars stay on the screen as they ended."""
        if self._started:
            self._progress.stop()
            self._started = False
