"""`fastfn info`: what this installation was built with."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("info", help="print build information (torch, CUDA, kernels) as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import fastfn
    print(json.dumps(fastfn.build_info(), indent=2))
    return 0
