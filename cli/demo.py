"""`msa-cache demo`: the README's main job."""
from __future__ import annotations

import click

from msa_cache_cli.options import threads_option


@click.command("demo")
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="MVSA-Single in the CLMLF layout [default: ../shared/data/mvsa-single if present, "
                   "else the embedded synthetic set]")
@click.option("--workdir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="where manifests/, cache/ and runs/ go")
@click.option("--seeds", type=int, default=3, show_default=True)
@click.option("--heads", default=None, help="comma-separated heads [default: all fit-stage heads]")
@click.option("--max-epochs", type=int, default=30, show_default=True)
@threads_option
def demo_cmd(root, workdir, seeds, heads, max_epochs):
    """manifest -> extract (minilm + efficientnet-lite0, offline) -> compare, ending with the leaderboard."""
    from msa_cache.demo import run_demo

    run_demo(root, workdir, seeds, heads.split(",") if heads else None, max_epochs, log=click.echo)
