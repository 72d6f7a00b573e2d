"""The `fastfn` command: a thin layer over library functions.

Each module in this package that defines ``register(subparsers)`` adds one or
more subcommands; register() sets ``func`` on its parser, called with the
parsed arguments and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastfn",
        description="Find and fix the false negatives of deep-learning MRI reconstruction.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        # Library functions raise with messages that name the file/key/argument at
        # fault; show that, not a traceback (FASTFN_DEBUG=1 re-raises).
        import os
        if os.environ.get("FASTFN_DEBUG"):
            raise
        print(f"fastfn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
