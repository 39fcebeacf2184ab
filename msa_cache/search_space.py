"""Hyper-parameter search ranges, declared once, next to the option they search.

A dataclass field of a head's Config (or of the trainer's TrainConfig) opts into
`msa-cache tune` with `metadata={"search": Range(...) | Choice(...)}`; the CLI flags
come from the same fields, so a searched option is always a flag `fit` accepts.
No dependency on Optuna here: `msa_cache.study.tune` turns these into suggestions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SEARCH = "search"  # the field-metadata key


@dataclass(frozen=True)
class Range:
    """A float in [low, high], sampled uniformly or on a log scale."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"search range [{self.low}, {self.high}] (log={self.log}) is empty or not positive")

    def describe(self) -> str:
        return f"{'log-uniform' if self.log else 'uniform'} [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice:
    """One of a few values (widths, switches)."""

    values: tuple

    def describe(self) -> str:
        return "one of {" + ", ".join(str(v) for v in self.values) + "}"


def searched_fields(config_cls) -> dict[str, Range | Choice]:
    """The fields of a Config dataclass that declare a search range, in field order."""
    return {f.name: f.metadata[SEARCH] for f in dataclasses.fields(config_cls) if SEARCH in f.metadata}


def field_default(config_cls, name: str) -> Any:
    f = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else None
