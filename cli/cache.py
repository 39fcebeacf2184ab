"""`msa-cache cache verify PATH` and `msa-cache cache info PATH`."""
from __future__ import annotations

import json

import click

from msa_cache.cache import cache_folders, cache_info, format_info, verify_cache


@click.group("cache")
def cache_group() -> None:
    """Inspect and check feature caches (cache/<manifest>/<encoder>)."""


@cache_group.command("verify")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="also check ids and fingerprint against this manifest")
@click.option("--quick", is_flag=True, help="skip the NaN/inf scan of every value")
def verify_cmd(path, manifest, quick):
    """Check caches are complete and consistent: all shards present, ids in manifest order,
    identical provenance, no NaN. PATH: an encoder folder, a manifest folder or the cache root.
    Exits 1 on any problem."""
    folders = cache_folders(path)
    if not folders:
        raise click.ClickException(f"{path}: no caches found (expected <manifest>/<encoder>/index.json)")
    results = [verify_cache(f, manifest=manifest, scan_values=not quick) for f in folders]
    for r in results:
        click.echo(r.summary())
    if not all(r.ok for r in results):
        raise SystemExit(1)


@cache_group.command("info")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info_cmd(path, as_json):
    """Encoders, rows, field shapes, dtype, bytes per row and bad rows of the caches under PATH."""
    infos = cache_info(path)
    if not infos:
        raise click.ClickException(f"{path}: no caches found (expected <manifest>/<encoder>/index.json); "
                                   "pass a cache root, a manifest folder or an encoder folder")
    click.echo(json.dumps(infos, indent=1, default=str) if as_json else format_info(infos))
