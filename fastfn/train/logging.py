"""Run logs a person or a script can read: JSONL and CSV metrics, TensorBoard, PNG panels.

Files in the run folder:
- ``metrics.jsonl``: one JSON object per record, ``{"split": "train"|"val", "step": int, ...}``;
- ``train.csv`` / ``val.csv``: the same records per split (columns fixed by the first
  record of that split; keys appearing later are in the JSONL only);
- ``tb/``: TensorBoard events when ``tensorboard`` is installed and enabled;
- ``panels/step_XXXXXXX/*.png``: target | zero-filled | reconstruction | |error|.
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from fastfn.fileio import atomic_write_bytes


class MetricsLogger:
    """Append metric records to JSONL/CSV (and TensorBoard) in ``out_dir``.

    ``truncate_after(step)`` drops records after ``step`` (used on resume, so the
    steps redone after the last checkpoint are not logged twice).
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.out_dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                pass
            else:
                self._tb = SummaryWriter(str(self.out_dir / "tb"))

    def log(self, split: str, step: int, values: Mapping[str, Any]) -> None:
        record = {"split": split, "step": int(step), **{k: _num(v) for k, v in values.items()}}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        path = self.out_dir / f"{split}.csv"
        new = not path.exists() or path.stat().st_size == 0
        if new:
            fields = list(record)
        else:
            with open(path, newline="") as f:
                fields = next(csv.reader(f))
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(record)
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step",):
                    self._tb.add_scalar(f"{split}/{k}", v, step)
            self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop JSONL/CSV records with ``step`` greater than ``step``."""
        if self.jsonl.exists():
            keep = [line for line in self.jsonl.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= step]
            atomic_write_bytes(self.jsonl, "".join(l + "\n" for l in keep).encode())
        for path in self.out_dir.glob("*.csv"):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            col = rows[0].index("step") if "step" in rows[0] else None
            kept = [rows[0]] + [r for r in rows[1:] if col is None or int(r[col]) <= step]
            buf = io.StringIO()
            csv.writer(buf).writerows(kept)
            atomic_write_bytes(path, buf.getvalue().encode())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def save_panel(path: str | Path, target: torch.Tensor, zero_filled: torch.Tensor,
               recon: torch.Tensor, title: str = "") -> None:
    """One PNG: target | zero-filled | reconstruction | |recon - target|.

    All images real (h, w); the first three share the target's grey scale, the
    error map its own (shown with its maximum in the title).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    imgs = [t.detach().float().cpu().numpy() for t in (target, zero_filled, recon)]
    err = abs(imgs[2] - imgs[0])
    vmax = float(imgs[0].max()) or 1.0
    fig = Figure(figsize=(12, 3.3))
    axes = fig.subplots(1, 4)
    names = ("target", "zero-filled", "reconstruction", "|error|")
    emax = float(err.max())
    for ax, img, name in zip(axes, imgs + [err], names):
        top = vmax if name != "|error|" else (emax or 1.0)
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=top)
        ax.set_title(name if name != "|error|" else f"|error| (max {emax:.3g})", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.84, wspace=0.04)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png", dpi=80)
    atomic_write_bytes(Path(path), buf.getvalue())


def _num(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
