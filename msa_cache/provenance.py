"""What gets saved with every cache and every run so it can be reproduced."""
from __future__ import annotations

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
