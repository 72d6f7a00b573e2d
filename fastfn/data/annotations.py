"""fastMRI+-style bounding-box annotations: one CSV row per box.

fastMRI+ (Zhao et al. 2021) ships::

    file,slice,study_level,x,y,width,height,label
    file1000001,17,No,104,151,22,13,Meniscus Tear

``x`` is the first column of the box in the (cropped) reconstruction image,
``width``/``height`` its size in pixels, and ``y``, as in fastMRI+ (whose knee
boxes were drawn on vertically flipped images), counts from the bottom: the top
row of the box is ``h - y - height`` (``y_origin="top"`` reads files whose ``y``
is the top row). Rows with ``study_level`` = Yes describe the whole study and have
no box; they are skipped. Used by the lesion metrics (``fastfn.evaluation.lesions``)
and the box loss of training (``fastfn.train.box_loss``).
"""
from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from fastfn.fileio import atomic_write_text

REQUIRED_COLUMNS = ("file", "slice", "x", "y", "width", "height", "label")
def annotations_path(folder: str | os.PathLike) -> Path:
    """Where the annotations of a data folder live by default: beside it, as
    ``<folder>_annotations.csv`` (a data folder holds ``.h5`` files only, so that
    fastMRI's own ``SliceDataset`` reads every entry of it)."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}_annotations.csv"


#: the columns fastfn writes (fastMRI+'s)
CSV_COLUMNS = ("file", "slice", "study_level", "x", "y", "width", "height", "label")


@dataclass(frozen=True)
class Box:
    """One annotated box of slice ``slice``: columns ``x:x+width``, ``height`` rows,
    ``y`` counted from the bottom (``y_origin="bottom"``, fastMRI+) or the top."""
    file: str  # volume name without the ``.h5`` suffix
    slice: int
    x: int
    y: int
    width: int
    height: int
    label: str
    y_origin: str = "bottom"

    def clipped(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) inside an (h, w) image, or None when outside it."""
        top = h - self.y - self.height if self.y_origin == "bottom" else self.y
        bottom, right = min(top + self.height, h), min(self.x + self.width, w)
        top, left = max(top, 0), max(self.x, 0)
        if bottom <= top or right <= left:
            return None
        return top, bottom, left, right


def volume_key(fname: str) -> str:
    """``"/data/file1000001.h5"`` -> ``"file1000001"`` (how fastMRI+ names volumes)."""
    name = Path(str(fname)).name
    return name[:-3] if name.endswith(".h5") else name


def read_annotations(path: str | Path, *, y_origin: str = "bottom") -> list[Box]:
    """Read a fastMRI+-style annotation CSV into boxes (study-level rows are skipped).

    Args:
        path: CSV file with at least the columns file, slice, x, y, width, height, label.
        y_origin: "bottom" (fastMRI+: ``y`` counts rows from the image's bottom) or
            "top" (``y`` is the box's top row).

    Raises FileNotFoundError for a missing file and ValueError naming the file,
    line and column for a missing column or a value that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    if y_origin not in ("bottom", "top"):
        raise ValueError(f"read_annotations: y_origin must be 'bottom' or 'top', got {y_origin!r}")
    boxes: list[Box] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"annotation file {path}: missing column(s) {missing}; "
                             f"expected {', '.join(REQUIRED_COLUMNS)} (got {columns})")
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if row.get("study_level", "").lower() in ("yes", "true", "1"):
                continue
            if all(row[c] == "" for c in ("x", "y", "width", "height")):
                continue  # a label without a box
            values = {}
            for c in ("slice", "x", "y", "width", "height"):
                try:
                    values[c] = int(float(row[c]))
                except ValueError:
                    raise ValueError(f"annotation file {path}, line {line}: column {c!r} "
                                     f"must be a number, got {row[c]!r}") from None
            if values["width"] <= 0 or values["height"] <= 0:
                raise ValueError(f"annotation file {path}, line {line}: box width and height "
                                 f"must be > 0, got {values['width']}x{values['height']}")
            boxes.append(Box(file=volume_key(row["file"]), label=row["label"],
                             y_origin=y_origin, **values))
    return boxes


def index_boxes(boxes: Iterable[Box]) -> dict[tuple[str, int], list[Box]]:
    """Boxes grouped by (volume, slice)."""
    out: dict[tuple[str, int], list[Box]] = defaultdict(list)
    for b in boxes:
        out[(b.file, b.slice)].append(b)
    return dict(out)


def box_weight_map(boxes: Sequence[Box], shape: tuple[int, int],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Float32 (h, w) map: 1 inside any of ``boxes`` (clipped to the image), 0 elsewhere."""
    h, w = shape
    m = torch.zeros(h, w, dtype=torch.float32, device=device)
    for b in boxes:
        c = b.clipped(h, w)
        if c is not None:
            m[c[0]:c[1], c[2]:c[3]] = 1.0
    return m


def batch_box_maps(batch: Mapping, index: Mapping[tuple[str, int], list[Box]],
                   shape: tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """(B, h, w) float32 box maps for a batch dict with ``fname`` and ``slice``."""
    maps = [box_weight_map(index.get((volume_key(f), int(s)), []), shape, device)
            for f, s in zip(batch["fname"], batch["slice"])]
    return torch.stack(maps) if maps else torch.zeros(0, *shape, device=device)


def write_annotation_csv(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write annotation rows (dicts of :data:`CSV_COLUMNS`, e.g. from
    ``fastfn.data.synthetic.annotation_rows``) atomically as CSV."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path
