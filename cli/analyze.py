"""`msa-cache analyze ...`: analyses of finished runs."""
from __future__ import annotations

import json

import click


@click.group("analyze")
def analyze_group():
    """Analyses of finished runs."""


@analyze_group.command("oracle")
@click.option("--text-run", required=True, type=click.Path(file_okay=False, exists=True),
              help="a text-only run family (runs/<manifest>/<family>: all its seeds) or one seed-K run")
@click.option("--image-run", required=True, type=click.Path(file_okay=False, exists=True),
              help="an image-only run family or run")
@click.option("--multi-run", default=None, type=click.Path(file_okay=False, exists=True),
              help="a multimodal run family or run")
@click.option("--split", default=None, type=click.Choice(["train", "dev", "test"]),
              help="[default: test where it is labeled (the paper's choice), else dev]")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def oracle_cmd(text_run, image_run, multi_run, split, as_json):
    """Share of rows a text-only or an image-only run gets right (the seed-000 "maximum
    theoretical accuracy"), the multimodal accuracy as a share of it, and the rows only
    the multimodal run gets right. Families: seeds matched by name, figures averaged."""
    from msa_cache.study.oracle import family_oracle

    try:
        r = family_oracle(text_run, image_run, multi_run, split)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    how = "chosen" if split else ("labeled" if r["split"] == "test" else "test unlabeled, so dev")
    click.echo(f"on {r['split']} ({how}): {r['rows']} labeled rows, mean over {r['seeds']} seed pair(s)")
    click.echo(f"text-only accuracy      {100 * r['text_accuracy']:.2f}%")
    click.echo(f"image-only accuracy     {100 * r['image_accuracy']:.2f}%")
    click.echo(f"oracle (either right)   {100 * r['oracle_accuracy']:.2f}%   "
               f"(both {r['both_right']:.1f}, only text {r['only_text_right']:.1f}, "
               f"only image {r['only_image_right']:.1f}, neither {r['neither_right']:.1f})")
    if "multimodal_accuracy" in r:
        click.echo(f"multimodal accuracy     {100 * r['multimodal_accuracy']:.2f}%   "
                   f"= {100 * r['multimodal_share_of_oracle']:.1f}% share of the oracle")
        click.echo(f"rows only the multimodal run gets right: {r['only_multimodal_right']:.1f}; right on "
                   f"{r['multimodal_right_where_unimodal_disagree']:.1f} of {r['unimodal_disagree']:.1f} rows "
                   f"where the uni-modal runs disagree")
