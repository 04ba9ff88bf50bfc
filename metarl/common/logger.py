"""Training logs: ``progress.csv`` and TensorBoard, one row / one set of scalars per iteration."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path


class RunLogger:
    """Writes the same scalars to ``RUN_DIR/progress.csv`` and TensorBoard (``RUN_DIR/tb``).

    The CSV columns are fixed by the first row written (later unknown keys go to TensorBoard only).
    On resume, rows after the checkpoint's iteration are dropped so a resumed run's CSV equals an
    uninterrupted one.
    """

    def __init__(self, run_dir: str | Path, resume_iteration: int | None = None, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "progress.csv"
        self.columns: list[str] | None = None
        if resume_iteration is not None and self.csv_path.exists():
            self._truncate(resume_iteration)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_iteration)

    def _truncate(self, last_iteration: int) -> None:
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        self.columns = list(rows[0].keys())
        keep = [r for r in rows if int(r["iteration"]) <= last_iteration]
        _atomic_write_csv(self.csv_path, self.columns, keep)

    def log(self, iteration: int, scalars: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = ["iteration"] + sorted(scalars)
            if not self.csv_path.exists():
                _atomic_write_csv(self.csv_path, self.columns, [])
        row = {"iteration": iteration, **{k: _fmt(scalars.get(k)) for k in self.columns[1:]}}
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)
        if self.writer is not None:
            for key, value in scalars.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(key, value, iteration)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _fmt(value) -> str:
    return "" if value is None else repr(float(value))


def _atomic_write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
