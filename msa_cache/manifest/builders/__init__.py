"""Dataset builders: one function per layout, `fn(root, **options) -> BuilderResult`.

Register a new layout here; `msa-cache manifest <format>` and `build_manifest(format, ...)`
pick it up from this table (its flags come from the function's @cli_options).
"""
from msa_cache.manifest.builders.clmlf import build_clmlf
from msa_cache.manifest.builders.common import BuilderResult
from msa_cache.manifest.builders.hfm import build_hfm
from msa_cache.manifest.builders.meme import build_meme
from msa_cache.manifest.builders.mvsa import build_mvsa
from msa_cache.manifest.builders.table import build_table
from msa_cache.manifest.builders.tmsc import build_tmsc

BUILDERS = {
    "mvsa": build_mvsa,
    "clmlf": build_clmlf,
    "meme": build_meme,
    "hfm": build_hfm,
    "tmsc": build_tmsc,
    "table": build_table,
}

__all__ = ["BUILDERS", "BuilderResult"]
