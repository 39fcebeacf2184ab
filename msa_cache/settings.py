"""Settings dataclasses (every head's Config, the trainer's and the fine-tuner's): the one place that
reads what a field's metadata declares (its type, range and choices) and checks a value against it.
The CLI builds its flags from the same metadata (cli/options.py), so a flag and a config-file value
are refused by the same rule.

Metadata keys a field may carry:
    help                    the flag's help text
    type                    int / float / str where the default is None
    min, max, min_open, max_open   numeric bounds (ints of head Configs default to 1 .. INT_MAX)
    choices                 the allowed strings
    identity                False: left out of the run's identity (speed or memory, not results;
                            see `identity_fields`); "when-set": in it only when the value differs from
                            the default, so a field added later keeps the runs made before it under
                            their hashes (and, by `recorded_fields`, their config.json)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from msa_cache.errors import MAX_SHOWN, shown  # noqa: F401  (messages here repeat user values through it)

# Head Config sizes are bounded so that a typo (or a tampered config.json) is refused instead of
# allocating terabytes.
INT_MAX = 1 << 14
HEAD_INT_RANGE = (1, INT_MAX)


def flag_name(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def field_kind(f: dataclasses.Field) -> type | None:
    """bool, int, float or str: the type of the default, else metadata["type"]; None for other fields."""
    default = f.default if f.default is not dataclasses.MISSING else None
    kind = type(default) if default is not None else f.metadata.get("type")
    return kind if kind in (bool, int, float, str) else None


def field_range(f: dataclasses.Field, int_range: tuple = (None, None)
                ) -> tuple[type, float | None, float | None, bool, bool] | None:
    """(type, min, max, min_open, max_open) of a numeric field; None for other fields. `int_range`
    gives the bounds an int field has where its metadata names none (head Configs: 1 .. INT_MAX);
    a float field is >= 0 unless it says otherwise."""
    kind, md = field_kind(f), f.metadata
    if kind is int:
        return int, md.get("min", int_range[0]), md.get("max", int_range[1]), False, False
    if kind is float:
        return float, md.get("min", 0.0), md.get("max"), bool(md.get("min_open")), bool(md.get("max_open"))
    return None


def describe_range(lo, hi, min_open: bool, max_open: bool = False) -> str:
    parts = []
    if lo is not None:
        parts.append(f"> {lo}" if min_open else f">= {lo}")
    if hi is not None:
        parts.append(f"< {hi}" if max_open else f"<= {hi}")
    return " and ".join(parts) or "any number"


def check_value(f: dataclasses.Field, value: Any, owner: str = "", int_range: tuple = (None, None)) -> None:
    """ValueError naming the flag (and `owner`, e.g. "head 'mha'") when `value` has the wrong type, lies
    outside the field's range or is not one of its choices. None passes where the default is None."""
    prefix = f"{owner}: " if owner else ""
    flag = flag_name(f)
    default = f.default if f.default is not dataclasses.MISSING else None
    if value is None and default is None:
        return
    choices = f.metadata.get("choices")
    if choices is not None:
        if value not in tuple(choices):
            raise ValueError(f"{prefix}{flag} must be one of {', '.join(map(str, choices))}, not {shown(value)}")
        return
    bounds = field_range(f, int_range)
    if bounds is None:
        want = field_kind(f)
        if want in (bool, str) and not isinstance(value, want):
            raise ValueError(f"{prefix}{flag} must be a {want.__name__}, not {shown(value)}")
        return
    kind, lo, hi, min_open, max_open = bounds
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok_type or (kind is float and not math.isfinite(value)):
        raise ValueError(f"{prefix}{flag} must be {'an integer' if kind is int else 'a finite number'}, "
                         f"not {shown(value)}")
    too_low = lo is not None and (value <= lo if min_open else value < lo)
    too_high = hi is not None and (value >= hi if max_open else value > hi)
    if too_low or too_high:
        raise ValueError(f"{prefix}{flag} {value} is out of range; it must be "
                         f"{describe_range(lo, hi, min_open, max_open)}")


def check_settings(obj, owner: str = "", int_range: tuple = (None, None)):
    """Check every field of a settings dataclass instance against its metadata; returns obj."""
    for f in dataclasses.fields(obj):
        check_value(f, getattr(obj, f.name), owner, int_range)
    return obj


def _at_default(f: dataclasses.Field, value) -> bool:
    return f.metadata.get("identity", True) == "when-set" and f.default is not dataclasses.MISSING \
        and value == f.default


def identity_fields(obj) -> dict:
    """The fields of a settings dataclass instance that name a run (hashed into its folder name): all but
    those whose metadata says "identity": False, and the "when-set" ones left at their default, in field
    order."""
    values = dataclasses.asdict(obj)
    return {f.name: values[f.name] for f in dataclasses.fields(obj)
            if f.metadata.get("identity", True) and not _at_default(f, values[f.name])}


def recorded_fields(obj) -> dict:
    """dataclasses.asdict(obj) without the "when-set" fields left at their default: what a run's config.json
    records (`from_saved` fills them back), so runs made before such a field existed read the same."""
    values = dataclasses.asdict(obj)
    return {f.name: values[f.name] for f in dataclasses.fields(obj) if not _at_default(f, values[f.name])}
