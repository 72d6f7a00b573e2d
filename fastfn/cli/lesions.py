"""`fastfn lesions`: reconstruction error inside annotated (fastMRI+-style) boxes per label."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "lesions", help="NMSE/SSIM inside annotated lesion boxes, per label and model",
        description="Reads a fastMRI+-style annotation CSV (file, slice, study_level, x, y, width, "
                    "height, label; y counted from the image bottom) and reports, for each model, "
                    "the NMSE (and SSIM for boxes of at least 7x7 pixels) inside the boxes per "
                    "label. Writes lesions.json and lesions.md into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--annotations", default=None,
                   help="annotation CSV (default: DATA_annotations.csv beside the --data folder)")
    p.add_argument("--data", default=None,
                   help="folder of fastMRI .h5 files (default: the synthetic validation set)")
    p.add_argument("--mask", default="random:4x@0.08", help="undersampling mask")
    p.add_argument("--y-origin", choices=("bottom", "top"), default="bottom",
                   help="bottom: y counts rows from the image bottom (fastMRI+)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output folder")
    from fastfn.cli.model_args import add_model_args
    add_model_args(p, several=True)
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from fastfn.evaluation.lesions import evaluate_lesions
    from fastfn.train.distributed import resolve_device
    device = resolve_device(args.device)
    from fastfn.cli.model_args import contamination_note, model_sources
    models = model_sources(args)
    note = contamination_note(args, args.data)
    if args.name is not None and len(args.name) != len(models):
        raise ValueError(f"--name given {len(args.name)} times for {len(models)} models (--ckpt, --weights)")
    result = evaluate_lesions(models, args.data, args.out, annotations=args.annotations,
                              mask=args.mask, y_origin=args.y_origin, names=args.name,
                              batch_size=args.batch_size, device=device, warnings=[note] if note else [])
    print((Path(args.out) / "lesions.md").read_text())
    print(json.dumps({k: result[k] for k in ("n_boxes", "n_slices", "unmatched_boxes")}))
    return 0
