"""Command-line flags built from the fields of a configuration dataclass.

``add_config_flags(parser, AttackConfig)`` adds one flag per field (nested dataclasses
flattened: ``AttackConfig.features.size`` is ``--size``), with the field's type, its
choices (field metadata) and its help line (the class docstring); every flag
defaults to None, so :func:`config_from_args` changes only what was given on the
command line and the dataclass (or a base config) keeps the rest. Validation stays
in the dataclasses.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Mapping, Sequence

from fastfn.configs import as_plain, field_docs, from_plain

_DEST = "cfg:"


def _pair(kind: type):
    def parse(text: str) -> tuple:
        parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected A or A,B, got {text!r}")
        return tuple(kind(p) for p in parts)
    return parse


def _list(kind: type):
    def parse(text: str) -> tuple:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return tuple(kind(p) for p in parts)
    return parse


def _leaf_fields(cls: type, path: tuple[str, ...] = (), nested: bool = True
                 ) -> list[tuple[tuple[str, ...], Any, type]]:
    """(path, field, owner class) of every non-dataclass field, depth first (nested
    dataclasses left out when ``nested`` is False)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if nested:
                out += _leaf_fields(tp, path + (f.name,))
        else:
            out.append((path + (f.name,), f, cls))
    return out


def add_config_flags(parser: argparse.ArgumentParser | Any, cls: type, *, prefix: str = "",
                     name: str = "", defaults: Any = None, skip: Sequence[str] = (),
                     nested: bool = True,
                     aliases: Mapping[str, Sequence[str]] | None = None,
                     title: str | None = None) -> None:
    """Add ``--[prefix]field-name`` flags for the fields of ``cls`` (nested ones flattened).

    Args:
        parser: an argparse parser (a group is made when ``title`` is given).
        cls: the configuration dataclass.
        prefix: flag prefix, e.g. ``"robust-"`` for ``--robust-beta``.
        name: keeps the values of several configs on one parser apart (the same
            name is passed to :func:`config_from_args`).
        defaults: an instance whose values the help shows (default ``cls()``).
        skip: field names (leaf names) that get no flag.
        nested: also flags for the fields of nested dataclasses (flattened).
        aliases: field name -> further flag strings (older names of the flag).
        title: argument group title.
    """
    defaults = defaults if defaults is not None else cls()
    plain = as_plain(defaults)
    target = parser.add_argument_group(title) if title else parser
    leaves = _leaf_fields(cls, nested=nested)
    counts: dict[str, int] = {}
    for path, f, _ in leaves:
        counts[f.name] = counts.get(f.name, 0) + 1
    for path, f, owner in leaves:
        if f.name in skip:
            continue
        # a name that two nested configs share is spelled with its path where it is nested
        # (RobustConfig.normalize_x beside AttackConfig.normalize must not clash)
        flag_name = f.name if counts[f.name] == 1 or len(path) == 1 else "_".join(path)
        docs = field_docs(owner)
        tp = typing.get_type_hints(owner)[f.name]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Union or (origin is not None and type(None) in args):
            tp = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(tp), typing.get_args(tp)
        default = plain
        for p in path:
            default = default[p]
        # "%(default).0s" prints nothing; it keeps ArgumentDefaultsHelpFormatter from adding
        # "(default: None)" (the flags default to None so that unset ones change nothing)
        text = docs.get(f.name, "").replace("%", "%%")
        kw: dict[str, Any] = {"dest": f"{_DEST}{name}:" + ".".join(path), "default": None,
                              "help": f"{text} (default: {default})%(default).0s".strip()}
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            kw.update(type=_list(args[0]), metavar="A,B,...")
        elif origin is tuple:
            kw.update(type=_pair(args[0]), metavar="A[,B]")
        elif tp is bool:
            kw.update(action=argparse.BooleanOptionalAction)
        elif tp in (int, float, str):
            kw.update(type=tp)
            if "choices" in f.metadata:
                kw.update(choices=f.metadata["choices"])
            else:
                kw.update(metavar={int: "N", float: "X", str: "TEXT"}[tp])
        else:
            continue  # free-form fields (dicts) are set through YAML
        flags = [f"--{prefix}{flag_name.replace('_', '-')}", *(aliases or {}).get(f.name, ())]
        target.add_argument(*flags, **kw)


def config_overrides(args: argparse.Namespace, name: str = "") -> dict[str, Any]:
    """The config values given on the command line: ``{"features.size": (3, 6), ...}``."""
    head = f"{_DEST}{name}:"
    return {k[len(head):]: v for k, v in vars(args).items() if k.startswith(head) and v is not None}


def config_from_args(args: argparse.Namespace, cls: type, base: Any = None, *, name: str = "",
                     source: str = "command line") -> Any:
    """``base`` (default ``cls()``) with the flags of :func:`add_config_flags` that were
    given applied; the dataclass validates the result."""
    d = as_plain(base if base is not None else cls())
    for key, value in config_overrides(args, name).items():
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return from_plain(cls, d, source=source)
