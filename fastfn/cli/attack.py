"""`fastfn attack`: the false-negative rate of a trained reconstructor under FNAF attacks.

    fastfn attack --ckpt RUN/best.pt --data DIR --mask random:4x@0.08 \
        --method random|pgd|pgd+refine --restarts R --steps T --out DIR
    fastfn attack --weights knee_sc_leaderboard_state_dict.pt --model unet_knee_sc ...
    torchrun --nproc_per_node N -m fastfn attack ...      (slices sharded across processes)

writes attack.json (summary), slices.jsonl / slices.csv (per slice), worst_*.png
(panels of the worst cases) and nmse_hist.png into --out.
"""
from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    from fastfn.attack import AttackConfig
    from fastfn.cli.config_flags import add_config_flags
    from fastfn.cli.model_args import add_model_args
    p = sub.add_parser("attack", help="find false-negative features of a trained model (FNAF attack)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="synthetic",
                   help="folder (or file) of fastMRI .h5 volumes; 'synthetic' (default) = the embedded test set")
    p.add_argument("--mask", default="random:4x@0.08", help="undersampling spec KIND:ACCx@FRACTION (default %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--restarts", type=int, help="candidate features per slice of the chosen --method "
                   "(sets --random-restarts or --pgd-restarts)")
    p.add_argument("--batch-size", type=int, default=4, help="slices per batch")
    p.add_argument("--max-slices", type=int, help="attack at most this many slices")
    p.add_argument("--crop-size", type=int, help="target crop (default: the files' reconstruction size)")
    p.add_argument("--panels", type=int, default=8, help="PNG panels of the worst cases (0: none)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(p, several=False)
    add_config_flags(p, AttackConfig, title="attack (fastfn.attack.AttackConfig; see docs/ATTACK.md)",
                     aliases={"pgd_steps": ["--steps"], "pgd_step_size": ["--step-size"],
                              "pgd_screen": ["--screen"]})
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from fastfn.attack import AttackConfig, attack_dataset
    from fastfn.attack.report import write_report
    from fastfn.attack.runner import merge_results
    from fastfn.cli.config_flags import config_from_args
    from fastfn.cli.model_args import contamination_note, model_sources
    from fastfn.data import KspaceTransform, SliceDataset, check_batch, collate, default_data, parse_mask_spec
    from fastfn.evaluation.models import load_model
    from fastfn.train.distributed import all_gather_objects, cleanup, init_distributed

    (source,) = model_sources(args)
    cfg = config_from_args(args, AttackConfig)
    if args.restarts is not None:
        cfg = cfg.with_restarts(args.restarts)
    data = default_data("test") if args.data == "synthetic" else Path(args.data)
    if not Path(data).exists():
        raise FileNotFoundError(f"--data {data}: no such folder or file")
    note = None
    dist = init_distributed(args.device)
    try:
        model, meta = load_model(source, dist.device)
        transform = KspaceTransform(parse_mask_spec(args.mask), crop_size=args.crop_size)
        ds = SliceDataset(data, transform, challenge="multicoil" if model.multicoil else "singlecoil")
        if len(ds) == 0:
            raise ValueError(f"--data {data}: no {'multi' if model.multicoil else 'single'}-coil slices found")
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False, collate_fn=collate)
        check_batch(next(iter(loader)), args.mask, "attack")  # a file without a fully sampled target, a bad mask
        progress = None
        if not args.no_progress and dist.is_main:
            from tqdm import tqdm
            total = len(ds) if args.max_slices is None else min(len(ds), args.max_slices)
            progress = tqdm(total=(total + dist.world_size - 1) // dist.world_size,
                            desc=f"attack ({cfg.method})", unit="slice")
        try:
            part = attack_dataset(model, loader, cfg, device=dist.device, keep_worst=args.panels,
                                  max_slices=args.max_slices, progress=progress,
                                  rank=dist.rank, world_size=dist.world_size)
        finally:
            if progress is not None:
                progress.close()
        if dist.distributed:
            parts = all_gather_objects(part, dist)
            result = merge_results(parts, cfg, dist.device, args.panels)
        else:
            result = part
        if not dist.is_main:
            return 0
        note = contamination_note(args, data)
        result["summary"].update({"ckpt": str(getattr(source, "path", source)), "data": str(data),
                                  "mask": args.mask, "model_name": meta.get("model_name"),
                                  "warnings": [note] if note else []})
        write_report(args.out, result, panels=args.panels)
    finally:
        cleanup()
    s = result["summary"]
    if note:
        print(f"warning: {note}")
    print(json.dumps({k: s[k] for k in ("method", "n_slices", "fn_rate", "fn_rate_ci95", "info_preserved_rate",
                                        "mean_worst_nmse", "median_worst_nmse", "features_per_second", "model_evals_per_second",
                                        "model_evals", "world_size")}, indent=2))
    return 0
