"""Training curves a user can open: per optimizer step, `train_log.csv` (loss, learning rate,
gradient norm, samples/s, dev score) and TensorBoard event files in the run folder's `tb/`.
`make tensorboard` points TensorBoard at a grid's runs. A resumed run drops what was logged after
the step it resumes from, so a curve never holds a step twice."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

COLUMNS = ("step", "loss", "lr", "grad_norm", "samples_per_second", "dev_score")


class Curves:
    def __init__(self, folder: Path, resume_at: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "train_log.csv"
        kept = []
        if resume_at and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_at]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.path)
        self.file = open(self.path, "a", newline="", encoding="utf-8")
        self.csv = csv.DictWriter(self.file, COLUMNS)
        # purge_step: TensorBoard hides the events of steps at or after it that an earlier try wrote
        self.tb = SummaryWriter(str(folder / "tb"), purge_step=resume_at + 1 if resume_at else None)

    def add(self, step: int, **values) -> None:
        self.csv.writerow({"step": step, **{k: "" if v is None else f"{v:.6g}" for k, v in values.items()}})
        for name, v in values.items():
            if v is not None and math.isfinite(v):
                self.tb.add_scalar(f"train/{name}", v, step)

    def flush(self) -> None:
        self.file.flush()
        self.tb.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def read(folder: Path) -> list[dict]:
    """The rows of a run's `train_log.csv`, numbers as floats (empty cells as None)."""
    with open(Path(folder) / "train_log.csv", newline="", encoding="utf-8") as f:
        return [{k: int(v) if k == "step" else (float(v) if v else None) for k, v in row.items()}
                for row in csv.DictReader(f)]
