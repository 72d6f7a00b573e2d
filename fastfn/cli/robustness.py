"""`fastfn evaluate-robustness`: compare models' clean quality and false negatives."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    from fastfn.cli.config_flags import add_config_flags
    from fastfn.cli.model_args import add_model_args
    from fastfn.evaluation.protocol import DEFAULT_ATTACK
    p = sub.add_parser(
        "evaluate-robustness", help="clean metrics and false-negative rates of several models",
        description="For each model and mask: clean NMSE/PSNR/SSIM (fastMRI convention) and the "
                    "false-negative rate (95%% Wilson interval) with the worst masked-NMSE "
                    "distribution under random search and the gradient attack, on the same "
                    "slices and feature draws for every model. Writes robustness.json, "
                    "robustness.md and PNG figures into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None,
                   help="folder of fastMRI .h5 files (default: the synthetic validation set)")
    p.add_argument("--masks", default="random:4x@0.08,random:8x@0.04",
                   help="mask settings, each starting with its kind")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--attacks", default="random,pgd", help="attack methods to run: random, pgd, pgd+refine")
    p.add_argument("--max-slices", type=int, default=64, help="slices per mask (0: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--studies", default="", metavar="LIST",
                   help="robustness studies to run too, on the first mask: map (susceptibility map), "
                        "detectability (contrast-detail), noise (adversarial k-space noise), comma-separated")
    p.add_argument("--studies-only", action="store_true",
                   help="run only the --studies (no clean metrics and FN rates of the protocol)")
    p.add_argument("--annotations", default=None, metavar="CSV",
                   help="box annotations for the region-aimed noise study (default: beside the --data folder)")
    add_model_args(p, several=True)
    add_config_flags(p, type(DEFAULT_ATTACK), defaults=DEFAULT_ATTACK, skip=("method",),
                     aliases={"random_restarts": ["--restarts"]},
                     title="attack budget and features (fastfn.attack.AttackConfig)")
    from fastfn.evaluation.studies import StudyConfig
    add_config_flags(p, StudyConfig, prefix="study-", name="study",
                     title="robustness studies (fastfn.evaluation.studies.StudyConfig; the features and the "
                           "search of the map and the contrast-detail grid are the attack's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from fastfn.cli.config_flags import config_from_args
    from fastfn.cli.model_args import contamination_note, model_sources
    from fastfn.evaluation.protocol import DEFAULT_ATTACK, evaluate_robustness
    from fastfn.train.distributed import cleanup, init_distributed
    models = model_sources(args)
    if args.name is not None and len(args.name) != len(models):
        raise ValueError(f"--name given {len(args.name)} times for {len(models)} models (--ckpt, --weights)")
    attack = config_from_args(args, type(DEFAULT_ATTACK), DEFAULT_ATTACK)
    note = contamination_note(args, args.data)
    studies = [t.strip() for t in args.studies.split(",") if t.strip()]
    if args.studies_only and not studies:
        raise ValueError("--studies-only needs --studies (map, detectability, noise)")
    if studies:
        from fastfn.evaluation.studies import StudyConfig, parse_studies
        parse_studies(studies)   # a bad name fails before any model runs
        study_config = config_from_args(args, StudyConfig, name="study")
    dist = init_distributed(args.device) if not args.studies_only else None
    try:
        report = None if args.studies_only else evaluate_robustness(
            models, args.data, args.masks, args.out, attack=attack,
            attacks=[a.strip() for a in args.attacks.split(",") if a.strip()],
            max_slices=args.max_slices or None, batch_size=args.batch_size,
            device=dist.device, progress=not args.no_progress, names=args.name,
            dist=dist if dist.distributed else None, warnings=[note] if note else [])
    finally:
        cleanup()
    if dist is not None and not dist.is_main:  # a rank other than 0 of a torchrun launch
        return 0
    if studies:
        from fastfn.data import split_mask_specs
        from fastfn.evaluation.studies import evaluate_studies
        from fastfn.evaluation.tables import studies_markdown
        from fastfn.fileio import atomic_write_text
        from fastfn.train.distributed import resolve_device
        result = evaluate_studies(models, args.data, split_mask_specs(args.masks)[0], Path(args.out) / "studies",
                                  studies=studies, attack=attack, config=study_config,
                                  annotations=args.annotations, max_slices=args.max_slices or None,
                                  batch_size=args.batch_size, device=resolve_device(args.device),
                                  progress=not args.no_progress, names=args.name)
        section = studies_markdown(result)
        md = Path(args.out) / "robustness.md"
        atomic_write_text(md, (md.read_text() + "\n" if report is not None else "") + section)
    print((Path(args.out) / "robustness.md").read_text())
    if report is not None:
        print(f"wrote {Path(args.out) / 'robustness.json'}, robustness.md and "
              f"{len(report['figures'])} figures ({report['world_size']} process(es))")
    return 0
