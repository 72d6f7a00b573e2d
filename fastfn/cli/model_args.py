"""The flags that say which model(s) a command evaluates: fastfn checkpoints or weights files.

``--ckpt PATH`` is a checkpoint of ``fastfn train``; ``--weights PATH`` with ``--model``
(``unet``, ``varnet``, ``cascade`` or a released fastMRI name such as ``unet_knee_sc``)
and ``--model-config KEY=VALUE`` reads fastMRI's released state dicts, Lightning
checkpoints of fastMRI's training scripts and bare state dicts
(``fastfn.models.load_weights``). ``--trained-on-val`` marks models that saw the
validation split in training (fastMRI's released models were trained on train +
validation data), so their reports say the evaluation is contaminated.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_model_args(p: argparse.ArgumentParser, *, several: bool) -> None:
    """Add --ckpt / --weights / --model / --model-config / --trained-on-val (and --name
    when ``several`` models may be given)."""
    g = p.add_argument_group("model", "a checkpoint of fastfn train (--ckpt), or a weights file "
                             "(--weights: fastMRI's released state dicts, Lightning .ckpt, bare state dicts)")
    many = dict(action="append", default=[]) if several else {}
    g.add_argument("--ckpt", metavar="PATH", **many,
                   help="checkpoint of fastfn train" + (" (repeat for several models)" if several else ""))
    g.add_argument("--weights", metavar="PATH", **many,
                   help="weights file of --model" + (" (repeat; all with the same --model)" if several else ""))
    g.add_argument("--model", metavar="NAME",
                   help="model of --weights: unet, varnet, cascade, or a released fastMRI name "
                        "(unet_knee_sc, unet_knee_mc, unet_brain_mc, varnet_knee_mc, varnet_brain_mc)")
    g.add_argument("--model-config", action="append", default=[], metavar="KEY=VALUE",
                   help="config key of --model (repeatable), e.g. chans=256 or multicoil=true")
    g.add_argument("--trained-on-val", action="store_true",
                   help="the model(s) were trained on the validation split too (fastMRI's released "
                        "models were): the report marks a validation-split evaluation as contaminated")
    if several:
        g.add_argument("--name", action="append", default=None, metavar="NAME",
                       help="display name per model, in the order --ckpt first, then --weights")


def model_sources(args: argparse.Namespace) -> list[Any]:
    """The checkpoint paths and :class:`~fastfn.evaluation.models.WeightsFile` s the flags
    name (checkpoints first); raises ValueError for a missing or contradictory choice."""
    from fastfn.evaluation.models import WeightsFile
    from fastfn.train.config import parse_override
    ckpts = args.ckpt if isinstance(args.ckpt, list) else [args.ckpt] if args.ckpt else []
    weights = args.weights if isinstance(args.weights, list) else [args.weights] if args.weights else []
    if not ckpts and not weights:
        raise ValueError("name a model: --ckpt PATH (fastfn checkpoint) or --weights PATH --model NAME")
    if weights and not args.model:
        raise ValueError("--weights needs --model (unet, varnet, cascade or a released fastMRI name)")
    if (args.model or args.model_config) and not weights:
        raise ValueError("--model and --model-config describe --weights; a --ckpt stores its own model")
    if not isinstance(args.ckpt, list) and ckpts and weights:
        raise ValueError("give either --ckpt or --weights, not both")
    config = dict(parse_override(t) for t in args.model_config)
    for path in ckpts + weights:
        if not Path(path).is_file():
            flag = "--ckpt" if path in ckpts else "--weights"
            raise FileNotFoundError(f"{flag} {path} does not exist")
    return list(ckpts) + [WeightsFile(str(w), args.model, config) for w in weights]


def contamination_note(args: argparse.Namespace, data: Any) -> str | None:
    """The warning a report carries for ``--trained-on-val`` models, or None."""
    if not getattr(args, "trained_on_val", False):
        return None
    return (f"the model(s) were trained on data that includes the validation split; an evaluation on "
            f"{data or 'the default data'} measures them on data they may have seen if it is (part of) "
            f"that split. For an uncontaminated false-negative rate, evaluate on fully sampled data the "
            f"model never saw: fastMRI's test and challenge files hold no fully sampled k-space, so neither "
            f"the attack nor the clean metrics can run on them; use a held-out scan set of your own.")
