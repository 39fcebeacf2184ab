"""The one registry of heads. A new head is one module with `@register_head` plus
one import line in `msa_cache/heads/__init__.py`; the CLI and `compare` read
their choices and flags from here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from msa_cache.heads.base import Head, ModalitySpec
from msa_cache.settings import HEAD_INT_RANGE, check_value, shown

HEADS: dict[str, type[Head]] = {}


def register_head(name: str):
    def wrap(cls: type[Head]) -> type[Head]:
        if name in HEADS:
            raise ValueError(f"head '{name}' registered twice")
        cls.name = name
        HEADS[name] = cls
        return cls

    return wrap


def get_head(name: str) -> type[Head]:
    try:
        return HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {shown(name)}; choose one of: {', '.join(sorted(HEADS))}") from None


def check_option(head: str, f: dataclasses.Field, value: Any) -> None:
    """ValueError when `value` has the wrong type or lies outside the field's range (msa_cache/settings.py)."""
    check_value(f, value, f"head '{head}'", HEAD_INT_RANGE)


def make_config(name: str, options: dict[str, Any] | None = None):
    """The head's Config with `options` applied; unknown keys and out-of-range values are an error,
    never ignored."""
    cls = get_head(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    options = dict(options or {})
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"head '{name}' has no option(s) {shown(unknown)}; its options are {sorted(fields)}"
        )
    for key, value in options.items():
        check_option(name, fields[key], value)
    return cls.Config(**options)


def create_head(name: str, spec: dict[str, ModalitySpec], num_classes: int, options: dict[str, Any] | None = None) -> Head:
    """timm-style factory: `create_head("ae-cat", spec, 3, {"latent": 64})`."""
    cls = get_head(name)
    if cls.modalities is not None:
        missing = [m for m in cls.modalities if m not in spec]
        if missing:
            raise ValueError(f"head '{name}' needs modalities {list(cls.modalities)}; the caches give {sorted(spec)}")
    if cls.uses_tokens:
        no_tokens = [m for m in spec if spec[m].token_dim is None and m in (cls.modalities or spec)]
        if no_tokens:
            raise ValueError(
                f"head '{name}' needs token features but the cache for {no_tokens} has pooled features only; "
                f"re-extract without --pooled-only"
            )
    return cls(spec, num_classes, make_config(name, options))


def option_fields() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Every Config field across heads: field name -> [(head, field)], for building CLI flags."""
    out: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for hname, cls in sorted(HEADS.items()):
        for f in dataclasses.fields(cls.Config):
            out.setdefault(f.name, []).append((hname, f))
    return out
