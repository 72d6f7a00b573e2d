"""`fastfn eval`: per-volume fastMRI metrics of a checkpoint and of the zero-filled input."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Evaluate a trained reconstructor (a checkpoint of `fastfn train`) over a folder of
fastMRI .h5 files, in fastMRI's convention: NMSE, PSNR and SSIM per volume (data range
= the volume's max) and their means over volumes, for the model and for the
zero-filled input. Writes OUT/metrics.json (atomically; with --panels N also
OUT/panels/*.png). Masks are seeded by file name, so every run sees the same masks.
"""


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: per-volume NMSE/PSNR/SSIM vs zero-filled",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", metavar="DIR",
                   help="folder (or file) of fastMRI .h5 volumes; default: the synthetic "
                        "default data (see --split) at the checkpoint's training settings")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="synthetic split used without --data (default val)")
    p.add_argument("--mask", metavar="SPEC",
                   help="mask spec such as random:4x@0.08 or a .npy column mask (default: "
                        "the checkpoint's training mask)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output folder for metrics.json (and panels/)")
    p.add_argument("--crop-size", type=int, metavar="N",
                   help="target crop (default: as trained, else the files' size)")
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="slices per batch")
    p.add_argument("--num-workers", type=int, default=0, metavar="N", help="loader workers")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--panels", type=int, default=0, metavar="N",
                   help="write PNG panels of the first N slices")
    p.add_argument("--max-batches", type=int, metavar="N", help="evaluate at most N batches")
    from fastfn.cli.model_args import add_model_args
    add_model_args(p, several=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastfn.cli.model_args import contamination_note, model_sources
    from fastfn.evaluation.checkpoint import evaluate_checkpoint

    (source,) = model_sources(args)
    note = contamination_note(args, args.data)
    report = evaluate_checkpoint(source, args.out, warnings=[note] if note else [], data=args.data, mask=args.mask,
                                 split=args.split, crop_size=args.crop_size,
                                 batch_size=args.batch_size, num_workers=args.num_workers,
                                 device=args.device, panels=args.panels,
                                 max_batches=args.max_batches)
    m, z = report["model"]["mean"], report["zero_filled"]["mean"]
    print(f"{report['volumes']} volumes, {report['slices']} slices, mask {report['mask']}")
    print(f"{'':12s} {'NMSE':>9s} {'PSNR':>8s} {'SSIM':>7s}")
    for name, r in (("model", m), ("zero-filled", z)):
        print(f"{name:12s} {r['nmse']:9.5f} {r['psnr']:8.2f} {r['ssim']:7.4f}")
    if note:
        print(f"warning: {note}")
    print(f"wrote {args.out / 'metrics.json'}")
    return 0
