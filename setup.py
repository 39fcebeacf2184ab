"""Package layout only; everything else is in pyproject.toml.

The cli/ folder is installed as `msa_cache_cli`, never as a bare top-level `cli`
package (that name collides with other projects in site-packages).
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["msa_cache", "msa_cache.*"]) + ["msa_cache_cli"],
    package_dir={"msa_cache_cli": "cli"},
)
