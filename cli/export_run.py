"""`msa-cache export RUN OUT [--push REPO]` and `msa-cache card RUN...`: share a finished run as a
Hugging Face model folder; a thin layer over msa_cache.study.share."""
from __future__ import annotations

import click



def _repo(ctx, param, value):
    if value is not None:
        from msa_cache.study.share import check_repo_id

        check_repo_id(value)  # a bad repo id fails here, before any work
    return value


@click.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path())
@click.option("--push", "repo", default=None, metavar="REPO", callback=_repo,
              help="then create the Hub model repo REPO (USER/NAME) if needed and upload the folder to it")
@click.option("--private", is_flag=True, help="with --push: create the repo private")
@click.option("--license", "license_id", default=None, metavar="ID",
              help="the license the model card states, as a Hub license id (mit, apache-2.0, cc-by-4.0, "
                   "other, ...); default: none stated")
def export_run_cmd(run, out, repo, private, license_id):
    """Write a finished run (cached or fine-tuned) to the new folder OUT for the Hugging Face Hub:
    model.safetensors, config.json, the model card README.md, metrics.json (and history, confusion
    plot, TensorBoard events where the run has them). `msa-cache predict OUT` reads it like the run.

    \b
    msa-cache export runs/mvsa-single/ae-cat-.../seed-0 exported/ae-cat
    msa-cache export runs/mvsa-single/ae-cat-.../seed-0 exported/ae-cat --push me/msa-ae-cat --license mit
    """
    from msa_cache.study.share import export_run, push_folder

    if private and repo is None:
        raise click.UsageError("--private goes with --push REPO")
    export_run(run, out, log=click.echo, license=license_id)
    if repo is not None:
        click.echo(f"pushed to {repo}: {push_folder(out, repo, private=private)}")


@click.command("card")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def card_cmd(runs):
    """(Re)write README.md, the Hugging Face model card, of finished runs (runs made before cards
    existed have none; new runs get theirs when they finish).

    \b
    msa-cache card runs/mvsa-single/*/seed-*
    """
    from msa_cache.study.share import write_card

    for run in runs:
        click.echo(f"wrote {write_card(run)}")
