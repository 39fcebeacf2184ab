"""What gets saved with every cache and every run so it can be reproduced."""
from __future__ import annotations

import dataclasses
import platform
import sys
from importlib import metadata

_PACKAGES = ("msa-cache", "torch", "torchvision", "transformers", "h5py", "numpy",
             "scikit-learn", "pyarrow", "pillow")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def from_saved(cls, data: dict):
    """cls(**data) keeping only the dataclass's current fields, so configs saved by an
    older version (with fields since removed) still load."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
