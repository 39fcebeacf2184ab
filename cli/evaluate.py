"""`msa-cache evaluate RUN...`: finished runs scored with a modality corrupted, or on another manifest
(thin layer over msa_cache.study.evaluate and msa_cache.study.eval_table)."""
from __future__ import annotations

import shlex

import click

from msa_cache_cli.options import device_option


def _corruptions(ctx, param, values):
    from msa_cache.study.corrupt import parse_corruption

    seed = ctx.params.get("seed") or 0
    try:
        return [parse_corruption(v, seed) for v in values]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _command(runs, corrupt, manifest, cache_root, class_map, seed, out) -> str:
    """The command as the user ran it (recorded in each evaluation's JSON)."""
    parts = ["msa-cache", "evaluate", *map(str, runs)]
    for c in corrupt:
        parts += ["--corrupt", f"{c.side}={c.kind}" + (f":{c.scale:g}" if c.kind == "noise" else "")]
    if manifest is not None:
        parts += ["--manifest", str(manifest), "--cache-root", str(cache_root)]
    for pair in class_map:
        parts += ["--class-map", pair]
    if seed:
        parts += ["--seed", str(seed)]
    if out is not None:
        parts += ["--out", str(out)]
    return shlex.join(parts)


@click.command("evaluate")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=click.IntRange(0, 2 ** 32 - 1), default=0, show_default=True, is_eager=True,
              help="seed of the shuffle's permutation and of the noise")
@click.option("--corrupt", "corrupt", multiple=True, callback=_corruptions, metavar="SIDE=KIND",
              help="text|image = drop | shuffle | noise:SCALE (repeatable; each is one evaluation)")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="score on this other labeled manifest (transfer); its caches must match the run's settings")
@click.option("--cache-root", default="cache", show_default=True, type=click.Path(file_okay=False),
              help="where the other manifest's caches are (with --manifest)")
@click.option("--class-map", "class_map", multiple=True, metavar="RUN_CLASS=OTHER_CLASS",
              help="count a run class as another manifest's class (repeatable; several may map to one)")
@device_option()
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="also write the table as OUT.md and OUT.csv")
def evaluate_cmd(runs, seed, corrupt, manifest, cache_root, class_map, device, out):
    """Score finished cached-feature runs with a modality dropped, shuffled or noisy, or on another manifest.

    Each evaluation goes to RUN/evals/<name>.json and .parquet (name: clean, image-drop, text-shuffle,
    image-noise0.5, transfer-<manifest>, transfer-<manifest>-image-drop); the reference row (clean, or
    the transfer without corruption) is scored too. RUN: a run folder, a run family folder (all its
    finished seeds; a CV family's fold runs, pooled out of fold in the table) or runs/<manifest>.
    The table (mean ± std over seeds, 95% bootstrap intervals as compare's, the drop in points) is
    printed, with the transfer matrix where there are transfer evaluations.

    \b
    msa-cache evaluate runs/mvsa-single --corrupt image=drop --corrupt text=drop --corrupt image=shuffle
    msa-cache evaluate runs/mvsa-single/late-abc/seed-0 --corrupt image=noise:0.5 --seed 1
    msa-cache evaluate runs/twitter-15 --manifest manifests/twitter-17.parquet --cache-root cache
    """
    from msa_cache.study.eval_table import read_evaluations, robustness_markdown, robustness_rows
    from msa_cache.study.eval_table import transfer_markdown, transfer_matrix, write_tables
    from msa_cache.study.evaluate import evaluate, parse_class_map

    command = _command(runs, corrupt, manifest, cache_root, class_map, seed, out)
    evaluate(list(runs), list(corrupt), manifest, cache_root, parse_class_map(list(class_map)), device, command,
             log=click.echo)
    evaluations = read_evaluations(list(runs))
    rows, cells = robustness_rows(evaluations), transfer_matrix(evaluations)
    click.echo("")
    click.echo(robustness_markdown(rows), nl=False)
    matrix = transfer_markdown(cells)
    if matrix:
        click.echo("\n" + matrix, nl=False)
    if out is not None:
        for path in write_tables(rows, cells, out):
            click.echo(f"wrote {path}")
