"""`msa-cache analyze ...`: analyses of finished runs."""
from __future__ import annotations

import json

import click

from msa_cache.runs.oracle import oracle


@click.group("analyze")
def analyze_group():
    """Analyses of finished runs."""


@analyze_group.command("oracle")
@click.option("--text-run", required=True, type=click.Path(file_okay=False, exists=True), help="a text-only run directory")
@click.option("--image-run", required=True, type=click.Path(file_okay=False, exists=True), help="an image-only run directory")
@click.option("--multi-run", default=None, type=click.Path(file_okay=False, exists=True), help="a multimodal run directory")
@click.option("--split", default="dev", show_default=True, type=click.Choice(["train", "dev", "test"]))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def oracle_cmd(text_run, image_run, multi_run, split, as_json):
    """Share of rows a text-only or an image-only run gets right (the seed-000 "maximum
    theoretical accuracy"), and the rows only a multimodal run gets right."""
    r = oracle(text_run, image_run, multi_run, split)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"{r['rows']} labeled {split} rows")
    click.echo(f"text-only accuracy      {100 * r['text_accuracy']:.2f}%")
    click.echo(f"image-only accuracy     {100 * r['image_accuracy']:.2f}%")
    click.echo(f"oracle (either right)   {100 * r['oracle_accuracy']:.2f}%   "
               f"(both {r['both_right']}, only text {r['only_text_right']}, only image {r['only_image_right']}, "
               f"neither {r['neither_right']})")
    if "multimodal_accuracy" in r:
        click.echo(f"multimodal accuracy     {100 * r['multimodal_accuracy']:.2f}%   "
                   f"rows only it gets right: {r['only_multimodal_right']}; right on "
                   f"{r['multimodal_right_where_unimodal_disagree']} of {r['unimodal_disagree']} rows where the "
                   f"uni-modal runs disagree")
