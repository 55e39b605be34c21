"""The metrics log every trainer writes: ``metrics.jsonl`` (one JSON object per line), mirrored to
TensorBoard under ``tb/`` when the ``tensorboard`` package is installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog"]


class MetricsLog:
    """Append-only ``DIR/metrics.jsonl`` plus a TensorBoard mirror of its numeric entries.

    Args:
        directory: the run directory (created if missing).
        step_key: the record field that is TensorBoard's x axis (``"step"``, ``"env_steps"``);
            a record without it is plotted at step 0.
        fresh: start an empty ``metrics.jsonl`` (a new run); False appends (a resumed run).

    Each record is written and closed at once, so a crash loses at most the record being written.
    """

    def __init__(self, directory: str | Path, *, step_key: str = "step", fresh: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "metrics.jsonl"
        self.step_key = step_key
        self.directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.path.write_text("")
        self._tb: Any = None  # None: not tried yet; False: tensorboard not installed

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a line of JSON) and mirror its numbers to TensorBoard."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._tb = False
            else:
                self._tb = SummaryWriter(str(self.directory / "tb"))
        if self._tb is False:
            return
        step = int(record.get(self.step_key, 0))
        for k, v in record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != self.step_key:
                self._tb.add_scalar(k, v, step)
        self._tb.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (the JSONL file is never held open)."""
        if self._tb:
            self._tb.close()
        self._tb = None
