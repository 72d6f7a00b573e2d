"""`fastfn demo`: train a standard and a robust U-Net on synthetic knees, attack both, compare."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    from fastfn.evaluation.demo import DemoConfig
    d = DemoConfig()
    p = sub.add_parser(
        "demo", help="the end-to-end job: standard vs robust U-Net, attacked and compared",
        description="On the embedded synthetic knee data: train a standard U-Net, train a robust "
                    "(FNAF) U-Net with the same budget, attack both (random search and the "
                    "gradient attack on the same slices and features) and write the comparison "
                    "table, figures and summary.json. The defaults took 6 minutes on a "
                    "2-core CPU; the flags scale it up (e.g. --size 320 --chans 32 --pools 4 "
                    "--steps 5000 --device cuda).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo", help="output folder")
    p.add_argument("--size", type=int, default=d.size, help="synthetic image size")
    p.add_argument("--train-volumes", type=int, default=d.train_volumes)
    p.add_argument("--val-volumes", type=int, default=d.val_volumes)
    p.add_argument("--slices", type=int, default=d.slices, help="slices per volume")
    p.add_argument("--chans", type=int, default=d.chans, help="U-Net channels")
    p.add_argument("--pools", type=int, default=d.pools, help="U-Net pooling layers")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps per model")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--mask", default=d.mask, help="training mask")
    p.add_argument("--eval-masks", default=d.eval_masks, help="evaluation masks")
    p.add_argument("--eval-slices", type=int, default=d.eval_slices)
    p.add_argument("--robust-attack", choices=("random", "pgd"), default=d.robust.attack)
    p.add_argument("--robust-beta", type=float, default=d.robust.beta)
    p.add_argument("--robust-start", type=float, default=d.robust_start,
                   help="fraction of the steps the robust U-Net trains clean before its "
                        "adversarial term switches on (0: from the first step)")
    p.add_argument("--pgd-steps", type=int, default=d.attack.pgd_steps,
                   help="evaluation gradient-attack steps")
    p.add_argument("--threshold", type=float, default=d.attack.threshold,
                   help="false negative when the worst masked NMSE >= this (the rate at "
                        "METHOD.md's 1e-3 is reported too)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads of torch (0: torch's default); 1 is fastest for the small "
                        "default models, above all on a CPU shared with busy processes")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from fastfn.evaluation.demo import DemoConfig, run_demo
    d = DemoConfig()
    cfg = DemoConfig(
        size=args.size, train_volumes=args.train_volumes, val_volumes=args.val_volumes,
        slices=args.slices, chans=args.chans, pools=args.pools, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, mask=args.mask, eval_masks=args.eval_masks,
        eval_slices=args.eval_slices, device=args.device, threads=args.threads or None,
        seed=args.seed,
        progress=not args.no_progress,
        robust=dataclasses.replace(d.robust, attack=args.robust_attack, beta=args.robust_beta),
        robust_start=args.robust_start,
        attack=dataclasses.replace(d.attack, pgd_steps=args.pgd_steps,
                                   threshold=args.threshold))
    run_demo(args.out, cfg)
    return 0
