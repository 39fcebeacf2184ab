"""`msa-cache explain RUN --id ID`: one example's attention as a picture (thin layer over msa_cache.explain)."""
from __future__ import annotations

import os

import click


@click.command("explain")
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--id", "row_id", required=True, help="manifest id of the example to draw")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="PNG to write  [default: RUN/explain-ID.png]")
def explain_cmd(run, row_id, out):
    """Draw one example's image with the head's weights over its patch grid as a heat map,
    and its text tokens shaded by their weights (a 1200 x 700 PNG).

    \b
    infig          the fusion attention-pooling weights (INFIG fig. 4)
    mdse           the private-feature weights 1 - s (MDSE fig. 2)
    ab-cat/ab-add  the cross-modal attention, averaged over query tokens

    \b
    msa-cache explain runs/mvsa-single/infig-.../seed-0 --id 1234
    """
    from msa_cache.explain import explain

    try:
        path = explain(run, row_id, out)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # One line for a user's mistake, also when this command runs outside the `msa-cache` group.
        if os.environ.get("MSA_CACHE_DEBUG"):
            raise
        raise click.ClickException(str(e.args[0] if isinstance(e, KeyError) and e.args else e)) from e
    click.echo(str(path))
