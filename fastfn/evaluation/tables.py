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


def studies_markdown(report: Mapping[str, Any]) -> str:
    """The robustness studies' section of the report (``fastfn.evaluation.studies``'s
    ``studies.json``): the missed fraction of the anatomy per model, the contrast-detail
    curve per model and the reconstruction NMSE under adversarial vs random k-space noise."""
    res, cfg, attack = report["results"], report["config"], report["attack"]
    lines = [f"## Robustness studies ({', '.join(report['studies'])}; {report['n_slices']} slices, "
             f"mask {report['mask']}, false negative at masked NMSE >= {attack['threshold']:g})", ""]
    if "map" in res:
        labels = sorted({lab for m in res["map"].values() for lab in m.get("per_label", {})})
        lines += [f"Susceptibility map (one {attack['features']['family']} feature at every {cfg['stride']}-px "
                  f"grid location inside the anatomy of {cfg['map_slices']} slice(s)): the fraction of "
                  "locations where the feature is a false negative.", "",
                  "| model | locations | missed fraction | " + " | ".join(labels) + (" |" if labels else ""),
                  "|---|---:|---:|" + "---:|" * len(labels)]
        for name, m in res["map"].items():
            per = [f"{m['per_label'][lab]['fn_fraction']:.3f}" if lab in m.get("per_label", {}) else "n/a"
                   for lab in labels]
            lines.append(f"| {name} | {m['n_locations']} | {m['fn_fraction']:.3f} | " + " | ".join(per)
                         + (" |" if labels else ""))
        lines.append("")
    if "detectability" in res:
        sizes = next(iter(res["detectability"].values()))["sizes"]
        lines += ["Contrast-detail curve: per feature size, the smallest contrast (fraction of the local "
                  "tissue intensity) detected in most slices (lower is better; - none detected).", "",
                  "| model | " + " | ".join(f"size {s:g}" for s in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for name, d in res["detectability"].items():
            lines.append(f"| {name} | " + " | ".join("-" if c is None else f"{c:g}" for c in d["curve"]) + " |")
        lines.append("")
    if "noise" in res:
        levels = res["noise"]["levels"]
        lines += ["Measurement-domain noise: NMSE of the reconstruction under adversarial / random noise of "
                  "relative l2 norm eps (||e|| = eps ||m k|| per slice).", "",
                  "| model | " + " | ".join(f"eps {e:g}" for e in levels) + " |", "|---|" + "---:|" * len(levels)]
        for name, c in res["noise"]["aims"]["image"].items():
            cells = [f"{a:.4f} / {r:.4f}" for a, r in zip(c["adversarial"]["nmse"], c["random"]["nmse"])]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Figures: " + ", ".join(f"`studies/{f}`" for f in report["figures"]))
    return "\n".join(lines) + "\n"
