"""`fastfn train`: train a reconstructor (a thin layer over fastfn.train.run_training)."""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

DESCRIPTION = """\
Train a reconstructor on fastMRI-format .h5 data (or, with no --data, on the synthetic
default data of fastfn.data, generated once into the cache).

Settings come from, lowest precedence first: built-in defaults, the YAML --config file,
--set KEY=VALUE overrides, and the flags below. The run folder --out receives
config.yaml, last.pt (every --ckpt-every steps and at the end), best.pt (best
validation SSIM), metrics.jsonl, train.csv, val.csv, panels/*.png, summary.json
(and tb/ when TensorBoard is installed). An existing run is never overwritten: pass
--resume to continue it from last.pt (the same model and model config are required).

Distributed: `torchrun --nproc_per_node N -m fastfn train ...` runs DDP (NCCL on CUDA,
gloo on CPU) with whole volumes per rank; --batch-size is per process.
"""

EPILOG = """\
examples:
  fastfn train --model unet --out runs/unet --steps 2000
  fastfn train --model cascade --config configs/cpu_small_cascade.yaml --out runs/cas
  fastfn train --model unet --data /data/knee_singlecoil --mask random:4x@0.08,8x@0.04 \\
      --out runs/knee --set optim.lr=3e-4 --set model_config.chans=32
  fastfn train --out runs/unet --resume --steps 4000        # continue, then go further
"""


def register(sub) -> None:
    p = sub.add_parser("train", help="train a reconstructor (U-Net, cascade, VarNet)",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, type=Path, metavar="RUN",
                   help="run folder for checkpoints, logs and panels (created)")
    g.add_argument("--config", type=Path, metavar="YAML",
                   help="YAML file of TrainConfig keys (see configs/*.yaml); with --resume "
                        "and no --config, RUN/config.yaml is used")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from RUN/last.pt (weights, optimiser, "
                        "scheduler, RNG states, step)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, dotted, value parsed as YAML (repeatable), "
                        "e.g. --set optim.lr=3e-4 --set model_config.chans=16")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=("unet", "cascade", "varnet"),
                   help="architecture (config key 'model'; default unet). unet and cascade "
                        "take single-coil data, varnet multi-coil")
    g.add_argument("--model-config", dest="model_overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="a keyword of the model's config dataclass, e.g. chans=16 "
                        "num_pool_layers=3 (unet), num_cascades=5 (cascade) (repeatable)")
    g.add_argument("--init-from", metavar="PATH",
                   help="start from these weights: a fastfn checkpoint, fastMRI's released state "
                        "dicts or a Lightning .ckpt of fastMRI's scripts (fine-tune, e.g. robustly; "
                        "the optimiser starts fresh). Config key 'init_from'")
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="DIR",
                   help="folder of fastMRI .h5 files: its train/ and val/ sub-folders, or its "
                        "volumes split by --val-fraction; default: the synthetic default data")
    g.add_argument("--val-data", metavar="DIR", help="separate validation folder")
    g.add_argument("--val-fraction", type=float, metavar="F",
                   help="fraction of --data's volumes held out for validation (default 0.2)")
    g.add_argument("--mask", metavar="SPEC",
                   help="undersampling: KIND:ACCx@FRACTION[,...] with KIND random, "
                        "equispaced, equispaced_fraction, magic or magic_fraction (default "
                        "random:4x@0.08), or a .npy 1-D column mask")
    g.add_argument("--crop-size", type=int, metavar="N",
                   help="target/output crop N x N (default: the files' reconstruction size)")
    g.add_argument("--batch-size", type=int, metavar="B", help="slices per batch per process")
    g.add_argument("--num-workers", type=int, metavar="N", help="DataLoader worker processes")
    g.add_argument("--synth-size", type=int, metavar="N",
                   help="matrix size of the synthetic default data (default 320)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, metavar="N", help="total optimiser steps")
    g.add_argument("--optimizer", choices=("adam", "adamw", "rmsprop"), help="optimiser")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--schedule", choices=("none", "step", "cosine"), help="LR schedule")
    g.add_argument("--loss", choices=("l1", "l2", "ssim"), help="image loss against the target")
    g.add_argument("--grad-clip", type=float, metavar="NORM",
                   help="clip the global gradient norm to NORM (default: no clipping)")
    g.add_argument("--amp", choices=("auto", "none", "bf16", "fp16"),
                   help="mixed precision on CUDA (auto: bf16 when supported); off on CPU")
    g.add_argument("--seed", type=int, help="seed of weights, data order and training masks")
    g.add_argument("--deterministic", action="store_true", default=None,
                   help="torch.use_deterministic_algorithms (slower on GPU)")
    g.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: torch's choice; 1 is fastest on a "
                        "busy machine)")
    g = p.add_argument_group("validation and logging")
    g.add_argument("--val-every", type=int, metavar="N", help="validate every N steps")
    g.add_argument("--ckpt-every", type=int, metavar="N",
                   help="write last.pt every N steps (default: at each validation)")
    g.add_argument("--val-max-batches", type=int, metavar="N",
                   help="validate on at most N batches per process (default: all)")
    g.add_argument("--log-every", type=int, metavar="N", help="log training metrics every N steps")
    g.add_argument("--panels", type=int, metavar="N",
                   help="PNG panels (target, zero-filled, recon, error) per validation")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard events")
    from fastfn.cli.config_flags import add_config_flags
    from fastfn.train.robust import RobustConfig
    g = p.add_argument_group("robust (FNAF) training", "per step: clean loss + beta x the loss on "
                             "adversarial features (fastfn.train.robust.RobustConfig); each --robust-* "
                             "flag implies --robust")
    g.add_argument("--robust", action="store_true", default=None,
                   help="train robustly against false-negative adversarial features")
    add_config_flags(g, RobustConfig, prefix="robust-", name="robust",
                     aliases={"method": ["--robust-attack"]})
    p.set_defaults(func=run)


# flag -> dotted config key
FLAG_KEYS = {
    "model": "model", "data": "data.train", "val_data": "data.val",
    "val_fraction": "data.val_fraction", "mask": "data.mask", "crop_size": "data.crop_size",
    "batch_size": "data.batch_size", "num_workers": "data.num_workers",
    "synth_size": "data.synth_size", "steps": "steps", "optimizer": "optim.name",
    "lr": "optim.lr", "schedule": "sched.name", "loss": "loss", "grad_clip": "grad_clip",
    "amp": "amp", "seed": "seed", "deterministic": "deterministic", "device": "device",
    "threads": "threads",
    "val_every": "val_every", "ckpt_every": "ckpt_every", "val_max_batches": "val_max_batches",
    "log_every": "log_every", "panels": "panels", "init_from": "init_from",
}


def build_config(args: argparse.Namespace):
    """defaults < --config (or RUN/config.yaml on --resume) < --set < flags."""
    from fastfn.train.config import load_config, parse_override

    config = args.config
    if config is None and args.resume and (args.out / "config.yaml").is_file():
        config = args.out / "config.yaml"
    overrides = dict(parse_override(o) for o in args.overrides)
    for text in args.model_overrides:
        key, value = parse_override(text)
        overrides[f"model_config.{key}"] = value
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = str(value) if flag in ("data", "val_data") else value
    if args.no_progress:
        overrides["progress"] = False
    if args.no_tensorboard:
        overrides["tensorboard"] = False
    from fastfn.cli.config_flags import config_overrides
    for key, value in config_overrides(args, "robust").items():
        overrides[f"robust.{key}"] = list(value) if isinstance(value, tuple) else value
    cfg = load_config(config, overrides)
    if args.robust and cfg.robust is None:  # --robust alone: the default robust settings
        from fastfn.train.robust import RobustConfig
        cfg = dataclasses.replace(cfg, robust=RobustConfig())
    return cfg


def run(args: argparse.Namespace) -> int:
    from fastfn.train.run import run_training

    cfg = build_config(args)
    summary = run_training(cfg, args.out, resume=args.resume)
    final = summary["final_val"]
    if final and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 reports
        print(f"[fastfn train] step {summary['steps']}: val PSNR {final['psnr']:.2f} dB "
              f"(zero-filled {final['zf_psnr']:.2f}), SSIM {final['ssim']:.4f} "
              f"(zero-filled {final['zf_ssim']:.4f}); run folder {args.out}")
    return 0
