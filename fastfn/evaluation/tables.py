"""The Markdown tables of the evaluation reports (robustness.md, lesions.md)."""
from __future__ import annotations

from typing import Any, Mapping


def markdown_table(report: Mapping[str, Any]) -> str:
    """The comparison table: one row per mask and model, clean metrics and FN rates."""
    attacks = report["attacks"]
    head = ["mask", "model", "NMSE", "PSNR", "SSIM"]
    for a in attacks:
        head += [f"FN rate {a} [95% CI]", f"median worst NMSE {a}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec, per_model in report["results"].items():
        for name, r in per_model.items():
            c = r["clean"]["mean"]
            row = [spec, name, f"{c['nmse']:.4f}", f"{c['psnr']:.2f}", f"{c['ssim']:.4f}"]
            for a in attacks:
                s = r[a]
                lo, hi = s["fn_rate_ci95"]
                row += [f"{s['fn_rate']:.3f} [{lo:.3f}, {hi:.3f}] ({s['fn_count']}/{s['n_slices']})",
                        f"{s['median_worst_nmse']:.2e}"]
            lines.append("| " + " | ".join(row) + " |")
    st = report["attack"]
    ft = st["features"]
    searches = []
    if "random" in attacks:
        searches.append(f"random search {st['random_restarts']} features per slice")
    if any(a.startswith("pgd") for a in attacks):
        searches.append(f"gradient attack {st['pgd_restarts']} starts "
                        + (f"(the worst of {st['pgd_screen'] * st['pgd_restarts']} random features) "
                           if st.get("pgd_screen", 1) > 1 else "")
                        + f"x {st['pgd_steps']} steps"
                        + (f", then {st['refine_iters']} rounds of location refinement" if "pgd+refine" in attacks else ""))
    lines += ["", f"Features: {ft['family']}, size {ft['size'][0]:g}..{ft['size'][1]:g}; " + "; ".join(searches)
              + f". False negative: worst masked NMSE >= {st['threshold']:g} "
              f"with the information preserved (zero-filled MSE in T >= {st['info_threshold']:g}). "
              f"Every model saw the same slices and feature draws."]
    for warning in report.get("warnings", []):
        lines += ["", f"**Warning:** {warning}"]
    return "\n".join(lines) + "\n"


def lesion_table(result: dict) -> str:
    """Markdown table of :func:`lesion_metrics`' result: one row per label and model
    (and the result's ``warnings`` below it)."""
    lines = ["| label | model | boxes | NMSE (mean over boxes) | NMSE (pooled) | SSIM |",
             "|---|---|---:|---:|---:|---:|"]
    fmt = (lambda v, f: "n/a" if v is None else format(v, f))
    for label, per_model in result["labels"].items():
        for name, m in per_model.items():
            lines.append(f"| {label} | {name} | {m['n_boxes']} | {fmt(m['nmse'], '.4g')} | "
                         f"{fmt(m['nmse_pooled'], '.4g')} | {fmt(m['ssim'], '.4f')} |")
    for warning in result.get("warnings", []):
        lines += ["", f"**Warning:** {warning}"]
    return "\n".join(lines) + "\n"
