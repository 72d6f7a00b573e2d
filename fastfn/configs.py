"""Configuration dataclasses to and from plain dicts (YAML, JSON, checkpoints).

Every configuration in fastfn is a dataclass, possibly nesting others
(``RobustConfig.attack`` is an ``AttackConfig`` whose ``features`` is a
``FeatureConfig``). :func:`from_plain` builds one from a nested dict, checking each
value against the field's type hint (int -> float and list -> tuple are converted)
and naming the source and the dotted key of anything unknown or mistyped. A
dataclass may define a classmethod ``migrate(d) -> dict`` that rewrites an older
layout of its keys into the current one; it runs before the keys are checked, so
configs and checkpoints written by older versions keep loading.

Field metadata ``{"choices": (...)}`` names the allowed values of a string field;
the command line uses it (``fastfn.cli.config_flags``) and ``__post_init__`` checks.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Mapping

from fastfn.fileio import to_plain

__all__ = ["from_plain", "as_plain", "field_docs", "check_choice"]


def as_plain(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a nested dict of plain values (tuples become lists)."""
    return to_plain(dataclasses.asdict(cfg))


def from_plain(cls: type, d: Mapping[str, Any], *, source: str = "config", prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from the nested mapping ``d``.

    Raises KeyError for an unknown key and ValueError for a value of the wrong type,
    each naming ``source`` and the dotted key (``prefix`` + name).
    """
    if isinstance(d, cls):
        return d
    if not isinstance(d, Mapping):
        raise ValueError(f"{source}: config key {prefix.rstrip('.') or '<root>'!r} "
                         f"must be a mapping, got {d!r}")
    migrate = getattr(cls, "migrate", None)
    d = dict(migrate(d) if migrate is not None else d)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise KeyError(f"{source}: unknown config key {prefix + unknown[0]!r}; "
                       f"known keys{' of ' + prefix.rstrip('.') if prefix else ''}: {names}")
    return cls(**{name: _coerce(hints[name], value, source, prefix + name) for name, value in d.items()})


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check (and gently convert: int -> float, list -> tuple) a value against its hint."""
    if dataclasses.is_dataclass(tp):
        return from_plain(tp, value, source=source, prefix=key + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{source}: config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{source}: config key {key!r} must be a non-empty list, got {value!r}")
        return tuple(_coerce(args[0], v, source, key) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{source}: config key {key!r} must be a list of {len(args)} "
                             f"numbers, got {value!r}")
        return tuple(_coerce(a, v, source, key) for a, v in zip(args, value))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is Any:
        return value
    raise ValueError(f"{source}: config key {key!r} must be {getattr(tp, '__name__', tp)}, "
                     f"got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming ``owner.name`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{name}: {value!r} is not one of {choices}")


_DOC_LINE = re.compile(r"^(\s+)([a-z_][a-z0-9_]*(?:\s*,\s*[a-z_][a-z0-9_]*)*):\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """The one-line help of each field, read from the class docstring's ``name: text``
    entries (continuation lines indented deeper are joined; ``a, b: text`` documents both)."""
    docs: dict[str, str] = {}
    current: list[str] = []
    indent = None
    for line in (cls.__doc__ or "").splitlines():
        m = _DOC_LINE.match(line)
        if m and (indent is None or len(m.group(1)) <= indent):
            indent = len(m.group(1))
            current = [n.strip() for n in m.group(2).split(",")]
            for n in current:
                docs[n] = m.group(3).strip()
        elif current and line.strip() and indent is not None and len(line) - len(line.lstrip()) > indent:
            for n in current:
                docs[n] += " " + line.strip()
        else:
            current = []
    return docs
