"""The attack's outputs: attack.json, per-slice JSONL and CSV, PNG panels, a histogram.

Rates come with 95% confidence intervals: Clopper-Pearson (exact, the one in
``fn_rate_ci95``) and Wilson (``fn_rate_ci95_wilson``). Files are written
atomically (temporary file in the same folder, fsync, rename).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastfn.fileio import atomic_write_bytes

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the binomial rate k / n; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # the bounds at k = 0 and k = n are exactly 0 and 1; rounding would put 1 - 1e-16 there
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of k / n from beta quantiles; (0, 1) when n = 0."""
    from scipy.stats import beta
    if n == 0:
        return 0.0, 1.0
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def summarize(records: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Summary numbers of per-slice records (keys worst_nmse, info_preserved, fn)."""
    n = len(records)
    nmse = np.array([r["worst_nmse"] for r in records], dtype=np.float64)
    k_fn = sum(bool(r["fn"]) for r in records)
    k_info = sum(bool(r["info_preserved"]) for r in records)
    k_miss = int((nmse >= threshold).sum()) if n else 0
    return {
        "n_slices": n,
        "threshold": threshold,
        "fn_rate": k_fn / n if n else math.nan,
        "fn_count": k_fn,
        "fn_rate_ci95": list(clopper_pearson_interval(k_fn, n)),
        "fn_rate_ci95_wilson": list(wilson_interval(k_fn, n)),
        "miss_rate": k_miss / n if n else math.nan,
        "info_preserved_rate": k_info / n if n else math.nan,
        "mean_worst_nmse": float(nmse.mean()) if n else math.nan,
        "median_worst_nmse": float(np.median(nmse)) if n else math.nan,
        "worst_nmse_quantiles": {str(q): float(np.quantile(nmse, q)) for q in (0.1, 0.25, 0.75, 0.9)} if n else {},
    }


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


CSV_FIELDS = ("fname", "slice", "worst_nmse", "info_mse", "info_preserved", "fn", "n_pixels")


def write_report(out: str | Path, result: dict[str, Any], panels: int = 8) -> dict[str, str]:
    """Write attack.json, slices.jsonl, slices.csv, worst_*.png and nmse_hist.png into ``out``.

    result: the output of :func:`fastfn.attack.attack_dataset`. Returns the paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = result["records"]
    paths = {"json": str(out / "attack.json"), "jsonl": str(out / "slices.jsonl"), "csv": str(out / "slices.csv")}
    summary = {**result["summary"], "slices_jsonl": "slices.jsonl", "slices_csv": "slices.csv"}
    atomic_write_bytes(out / "attack.json", (json.dumps(summary, indent=2, default=_json_default) + "\n").encode())
    atomic_write_bytes(out / "slices.jsonl",
                 "".join(json.dumps(r, default=_json_default) + "\n" for r in records).encode())
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    wr.writeheader()
    for r in records:
        wr.writerow({**{k: r[k] for k in CSV_FIELDS if k in r}, "n_pixels": len(r["feature_rows"])})
    atomic_write_bytes(out / "slices.csv", buf.getvalue().encode())
    if records:
        paths["histogram"] = str(out / "nmse_hist.png")
        atomic_write_bytes(out / "nmse_hist.png", histogram_png(records, result["summary"]["threshold"]))
    for i, case in enumerate(result.get("worst", [])[:panels]):
        p = out / f"worst_{i:02d}.png"
        atomic_write_bytes(p, panel_png(case))
        paths[f"panel_{i}"] = str(p)
    return paths


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def histogram_png(records: Sequence[dict[str, Any]], threshold: float) -> bytes:
    """Histogram of log10 worst masked NMSE with the false-negative threshold marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    v = np.log10(np.clip([r["worst_nmse"] for r in records], 1e-12, None))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(v, bins=min(40, max(5, len(v) // 2)), color="#4477aa")
    ax.axvline(math.log10(threshold), color="#cc3311", ls="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("log10 worst masked NMSE per slice")
    ax.set_ylabel("slices")
    ax.legend()
    return _png(fig)


def panel_png(case: dict[str, Any]) -> bytes:
    """One worst case: target with the feature outlined, zero-filled input,
    reconstruction, and the error inside T (zoomed on the feature)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = case["target_img"].numpy()
    reg = case["region_img"].numpy()
    zf = case["zero_filled_img"].numpy()
    rec = case["recon_img"].numpy()
    vmax = float(t.max()) or 1.0
    rows, cols = np.nonzero(reg)
    cy, cx = (int(rows.mean()), int(cols.mean())) if rows.size else (t.shape[0] // 2, t.shape[1] // 2)
    half = 20
    y0, x0 = max(cy - half, 0), max(cx - half, 0)
    zoom = (slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half))
    err = np.abs(t - rec) * reg
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.6))
    axes[0].imshow(t, cmap="gray", vmin=0, vmax=vmax)
    axes[0].contour(reg, levels=[0.5], colors="r", linewidths=0.6)
    axes[0].set_title("target + feature (T outlined)")
    axes[1].imshow(zf, cmap="gray", vmin=0, vmax=vmax)
    axes[1].set_title("zero-filled input")
    axes[2].imshow(rec, cmap="gray", vmin=0, vmax=vmax)
    axes[2].set_title("reconstruction")
    axes[3].imshow(np.concatenate([t[zoom], rec[zoom]], axis=1), cmap="gray", vmin=0, vmax=vmax)
    axes[3].set_title("zoom: target | reconstruction")
    im = axes[4].imshow(err[zoom], cmap="magma")
    axes[4].set_title("|error| inside T (zoom)")
    fig.colorbar(im, ax=axes[4], fraction=0.046)
    for a in axes:
        a.set_axis_off()
    fig.suptitle(f"{case['fname']} slice {case['slice']}: masked NMSE {case['worst_nmse']:.3g}, "
                 f"info preserved {case['info_preserved']}, FN {case['fn']}")
    return _png(fig)
