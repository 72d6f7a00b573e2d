"""Shared helpers of the benchmark scripts: median timing with torch.utils.benchmark,
run metadata, a plain-text table and atomic JSON output."""
from __future__ import annotations

import json
import statistics
from typing import Callable, Sequence

import torch
import torch.utils.benchmark as tbench


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in milliseconds over `repeats` single calls after `warmup`
    calls. torch.utils.benchmark synchronises CUDA around each timed call."""
    for _ in range(warmup):
        fn()
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn})
    return 1e3 * statistics.median(timer.timeit(1).median for _ in range(repeats))


def time_interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int,
                       warmup: int = 1, number: int = 1) -> dict[str, list[float]]:
    """Wall times in milliseconds per call of each fn over `repeats` rounds, every round
    timing each fn (`number` calls, averaged) in turn, so that all of them see the machine
    in the same state (on a shared machine the speed drifts between seconds; ratios of the
    same round stay comparable)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timers = {k: tbench.Timer(stmt="fn()", globals={"fn": fn}) for k, fn in fns.items()}
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, timer in timers.items():
            out[k].append(1e3 * timer.timeit(number).median)
    return out


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of num[i] / den[i]."""
    return statistics.median(a / b for a, b in zip(num, den))


def run_info(device: torch.device) -> dict:
    """What the figures were measured on."""
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Print rows (dicts) as an aligned text table of the given columns."""
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def write_json_atomic(path: str, obj: dict) -> None:
    """Write obj as JSON to path atomically (fastfn.fileio)."""
    from fastfn.fileio import atomic_write_text
    atomic_write_text(path, json.dumps(obj, indent=1))
