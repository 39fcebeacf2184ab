"""Package attributes imported on first use (PEP 562): a package's light names load at once and its
heavy ones (those that import torch) only when used, so `--help` and option checks stay fast."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package`: each name in `table` is read from the module named
    beside it when first asked for."""

    def __getattr__(name: str):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
