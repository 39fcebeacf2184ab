"""Heads by name: options checked, models built. The table itself (names, Configs, traits) is
heads/catalog.py, which imports no torch; a head's model file is imported only by `create_head`.
The CLI's `--head` choices and flags, `compare` and `tune` read the catalog through here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from msa_cache.heads.catalog import HEADS, HeadEntry
from msa_cache.settings import HEAD_INT_RANGE, check_value, shown


def get_head(name: str) -> HeadEntry:
    """The head's catalog entry (its Config and traits; `.model_class()` imports the model)."""
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
    entry = get_head(name)
    fields = {f.name: f for f in dataclasses.fields(entry.Config)}
    options = dict(options or {})
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"head '{name}' has no option(s) {shown(unknown)}; its options are {sorted(fields)}"
        )
    for key, value in options.items():
        check_option(name, fields[key], value)
    return entry.Config(**options)


def check_modalities(name: str, spec: dict) -> None:
    """ValueError when the caches (`spec`: modality -> ModalitySpec) lack what the head needs."""
    entry = get_head(name)
    if entry.modalities is not None:
        missing = [m for m in entry.modalities if m not in spec]
        if missing:
            raise ValueError(f"head '{name}' needs modalities {list(entry.modalities)}; the caches give {sorted(spec)}")
    if entry.uses_tokens:
        no_tokens = [m for m in spec if spec[m].token_dim is None and m in (entry.modalities or spec)]
        if no_tokens:
            raise ValueError(
                f"head '{name}' needs token features but the cache for {no_tokens} has pooled features only; "
                f"re-extract without --pooled-only"
            )


def create_head(name: str, spec: dict, num_classes: int, options: dict[str, Any] | None = None):
    """timm-style factory: `create_head("ae-cat", spec, 3, {"latent": 64})` (spec: modality -> ModalitySpec).
    Options and modalities are checked before the model file (and torch) is imported."""
    check_modalities(name, spec)
    cfg = make_config(name, options)
    return get_head(name).model_class()(spec, num_classes, cfg)


def option_fields() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Every Config field across heads: field name -> [(head, field)], for building CLI flags."""
    out: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for hname, entry in sorted(HEADS.items()):
        for f in dataclasses.fields(entry.Config):
            out.setdefault(f.name, []).append((hname, f))
    return out
