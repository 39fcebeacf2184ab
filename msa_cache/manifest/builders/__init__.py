"""Dataset builders: one function per layout, `fn(root, **options) -> BuilderResult`.

A new layout is one module whose builder carries `@register_builder("<format>")` (and `@cli_options`
for its flags), plus one import line here; `msa-cache manifest <format>`, `build_manifest(format, ...)`
and `compare --export-test` pick it up from the registry.
"""
from msa_cache.manifest.builders.common import BUILDERS, BuilderResult
from msa_cache.manifest.builders import mvsa, clmlf, meme, hfm, tmsc, table  # noqa: F401  (they register)

__all__ = ["BUILDERS", "BuilderResult"]
