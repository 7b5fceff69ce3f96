"""Training metrics out: ``metrics.jsonl`` (one object per logged step), TensorBoard event files
(tensorboardX) and a progress bar on stderr. Only process 0 writes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop lines logged after ``last_step`` (a resumed run recomputes them)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(output_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    def __init__(
        self,
        output_dir: str | Path,
        *,
        total_steps: int,
        start_step: int,
        tensorboard: bool = True,
        progress: bool = True,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_FILE
        self._file = None
        self._writer = None
        self._bar = None
        if not enabled:
            return
        truncate_metrics(self.path, start_step)
        self._file = self.path.open("a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(Path(output_dir) / TENSORBOARD_DIR), purge_step=start_step + 1)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], prefix: str = "") -> None:
        """Write one record; ``prefix`` (``"eval/"``) names a group of metrics in TensorBoard and JSON."""
        if not self.enabled:
            return
        record = {"step": step, **{f"{prefix}{k}": _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in record.items():
                if name != "step" and value is not None:
                    self._writer.add_scalar(name if prefix else f"train/{name}", value, step)
            self._writer.flush()
        if self._bar is not None:
            shown = {
                k: record[k]
                for k in (f"{prefix}loss", "accuracy", "steps_per_sec", "mfu")
                if record.get(k) is not None
            }
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.close()


def _plain(value: Any) -> float | int | None:
    value = float(value)
    return None if math.isnan(value) else value
