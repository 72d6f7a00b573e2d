"""`fastfn robust-sweep`: the robustness-quality trade-off of several robust-training settings."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    from fastfn.cli.demo import add_demo_flags
    p = sub.add_parser(
        "robust-sweep", help="train and attack several robust settings at one budget: the trade-off curve",
        description="Train the demo's standard model and one robust model per setting with the same "
                    "budget (the demo's flags set scale, data and budget; --robust-* the base robust "
                    "settings), attack each with the demo's evaluation, and write sweep.json, sweep.md "
                    "and trade_off.png (clean SSIM and PSNR against the gradient attack's FN rate, "
                    "95% intervals, the standard model as reference). Rerun the same command to "
                    "continue an interrupted sweep or to add points.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="sweep", help="sweep folder (a rerun continues it)")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one point per value of a robust setting, e.g. beta=0.03,0.1,0.3 or "
                        "start=0.25,0.5 (the fraction of steps trained clean first); repeatable")
    p.add_argument("--point", action="append", default=[], metavar="NAME[:KEY=VALUE;...]",
                   help="a named setting, e.g. 'local:attack.features.intensity_mode=local;beta=0.2' "
                        "(values as YAML); repeatable")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="steps between last.pt writes (default: a tenth of --steps)")
    add_demo_flags(p, "base robust training of every point (RobustConfig; its start is --robust-start)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from fastfn.cli.demo import demo_config_from_args
    from fastfn.evaluation.sweep import parse_point, run_sweep, vary_points
    points = [pt for text in args.vary for pt in vary_points(text)] + [parse_point(t) for t in args.point]
    if not points:
        raise ValueError("give at least one setting: --vary KEY=V1,V2,... or --point NAME[:KEY=VALUE;...]")
    summary = run_sweep(args.out, demo_config_from_args(args), points, checkpoint_every=args.checkpoint_every)
    print((Path(args.out) / "sweep.md").read_text())
    print(f"[sweep] {summary['figure']}", flush=True)
    return 0
