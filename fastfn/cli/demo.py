"""`fastfn demo`: train a standard and a robust model (synthetic knees or your data), attack both, compare."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="the end-to-end job: standard vs robust U-Net, attacked and compared",
        description="On the embedded synthetic knee data (or --data DIR, a fastMRI folder): train a "
                    "standard U-Net (or --model cascade|varnet), train a robust "
                    "(FNAF) one with the same budget, attack both (random search and the "
                    "gradient attack on the same slices and features) and write the comparison "
                    "table, figures and summary.json. The defaults take about 5 minutes on a "
                    "2-core CPU; the flags scale it up (e.g. --size 320 --chans 32 --pools 4 "
                    "--steps 5000 --device cuda).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo", help="output folder")
    add_demo_flags(p, "robust training (RobustConfig; its start is --robust-start)")
    p.set_defaults(func=run)


def add_demo_flags(p: argparse.ArgumentParser, robust_title: str) -> None:
    """The demo's settings as flags (shared with ``fastfn robust-sweep``): DemoConfig's own
    fields, --model-config, the robust training's --robust-* and the evaluation's --attack-*."""
    from fastfn.attack import AttackConfig
    from fastfn.cli.config_flags import add_config_flags
    from fastfn.evaluation.demo import DemoConfig
    from fastfn.train.robust import RobustConfig
    d = DemoConfig()
    add_config_flags(p, DemoConfig, defaults=d, nested=False, title="data, model, scale and budget (DemoConfig)")
    p.add_argument("--model-config", action="append", default=[], metavar="KEY=VALUE",
                   help="config key of --model (repeatable), e.g. num_cascades=5")
    add_config_flags(p, RobustConfig, prefix="robust-", name="robust", defaults=d.robust,
                     skip=("start_step",), aliases={"method": ["--robust-attack"]}, title=robust_title)
    add_config_flags(p, AttackConfig, prefix="attack-", name="attack", defaults=d.attack,
                     skip=("method",), aliases={"pgd_steps": ["--pgd-steps"], "threshold": ["--threshold"]},
                     title="evaluation attack (AttackConfig; the FN rate at docs/METHOD.md's 1e-3 "
                           "is reported too)")


def demo_config_from_args(args: argparse.Namespace):
    """The DemoConfig the flags of :func:`add_demo_flags` describe."""
    import dataclasses

    from fastfn.attack import AttackConfig
    from fastfn.cli.config_flags import config_from_args
    from fastfn.evaluation.demo import DemoConfig
    from fastfn.train.config import parse_override
    from fastfn.train.robust import RobustConfig
    d = DemoConfig()
    cfg = dataclasses.replace(
        config_from_args(args, DemoConfig, d),
        model_config=dict(parse_override(t) for t in args.model_config),
        robust=config_from_args(args, RobustConfig, d.robust, name="robust"),
        attack=config_from_args(args, AttackConfig, d.attack, name="attack"))
    return dataclasses.replace(cfg, threads=None) if cfg.threads == 0 else cfg  # 0: torch's default


def run(args) -> int:
    from fastfn.evaluation.demo import run_demo
    run_demo(args.out, demo_config_from_args(args))
    return 0
