"""`msa-cache fit` and `msa-cache compare`: thin wrappers over msa_cache.fit and msa_cache.study."""
from __future__ import annotations

from pathlib import Path

import click

from msa_cache import threads
from msa_cache.heads import default_heads, get_head, make_config
from msa_cache.manifest import read_manifest
from msa_cache.partition import resolve_partition
from msa_cache.fit.config import RunSpec
from msa_cache.train.identity import monitor_for
from msa_cache.metrics import scores_line
from msa_cache.study.stats import MAX_RESAMPLES, N_RESAMPLES

from msa_cache_cli.config_file import config_option
from msa_cache_cli.options import (
    MAX_SEEDS, cv_options, data_options, head_flags, head_names, pop_head_options, pop_train_config, resolve_manifest,
    tensorboard_option, threads_option, train_options,
)


batch_seeds_option = click.option(
    "--batch-seeds/--no-batch-seeds", default=None,
    help="train the seeds of a configuration together, stacked, wherever its head allows it (pooled "
         "gradient heads; the same runs up to float rounding) / always one at a time [default: stacked where "
         "the head allows it and it pays: on a GPU without AMP, or on a CPU for heads of at most 100k "
         "parameters]. Not part of a run's identity")


def _caches(kwargs: dict) -> tuple[Path, dict[str, Path]]:
    from msa_cache.fit.features import resolve_caches

    manifest_path = resolve_manifest(kwargs.pop("manifest"))
    manifest = read_manifest(manifest_path)
    caches = resolve_caches(manifest, kwargs.pop("cache_root"), kwargs.pop("text_cache"),
                            kwargs.pop("image_cache"), kwargs.pop("clip_cache"))
    return manifest_path, caches


@click.command("fit")
@config_option(reproduces_runs=True)
@click.option("--head", required=True, type=click.Choice(head_names()), help="which head to train")
@click.option("--seed", "seeds", type=click.IntRange(0, 2**32 - 1), multiple=True, default=(0,), show_default=True,
              help="random seed; repeat for several runs (--seed 0 --seed 1 --seed 2)")
@tensorboard_option
@batch_seeds_option
@threads_option
@cv_options
@data_options
@train_options
@head_flags(multi=False)
def fit_cmd(head, seeds, tensorboard, batch_seeds, cv, cv_seed, refit, **kwargs):
    """Train one head on cached features (one run directory per seed).

    \b
    msa-cache fit --head ae-cat --latent 64
    msa-cache fit --head mha --text-cache minilm --image-cache efficientnet-lite0 --seed 0 --seed 1
    msa-cache fit --config runs/M/FAMILY/seed-0/command.yaml   # that run again (skipped when finished)
    msa-cache fit --config runs/M/FAMILY/seed-0/config.json --seed 1   # the same config, seed 1

    Prints one line per epoch; on a terminal a bar counts each epoch's batches.
    """
    from msa_cache.fit.cv import fit_family
    from msa_cache.fit.seeds import fit_seeds

    options = pop_head_options(kwargs, multi=False)
    make_config(head, options)  # fails here, before any work, on an option this head lacks
    threads.use(get_head(head).compute)
    runs_root = kwargs.pop("runs_root")
    manifest_path, caches = _caches(kwargs)
    train = pop_train_config(kwargs)
    if refit and not cv:
        raise click.UsageError("--refit goes with --cv K (it trains for the epoch count the folds chose)")
    specs = [RunSpec(str(manifest_path), {k: str(v) for k, v in caches.items()}, head, dict(options), train, seed,
                     cv_folds=cv, cv_seed=cv_seed) for seed in seeds]
    if cv:
        for spec in specs:
            _echo_cv(fit_family(spec, cv, refit, runs_root, log=click.echo, progress=click.echo,
                                tensorboard=tensorboard))
        return
    # several seeds: trained together where the head allows it (msa_cache/fit/seeds.py)
    for r in fit_seeds(specs, runs_root, log=click.echo, progress=click.echo, tensorboard=tensorboard,
                       batch=batch_seeds):
        state = "already finished, skipped" if r.skipped else f"trained in {r.seconds:.1f}s"
        click.echo(f"{r.path}  ({state})")
        for split, m in r.metrics.items():
            click.echo(f"  {split:<5} {scores_line(m)}  (n={m['n']})")


def _echo_cv(r) -> None:
    click.echo(f"{r.path}  ({len(r.folds)} folds)")
    for split, m in r.metrics.items():
        name = "out-of-fold" if split == "dev" else f"{split} (mean of the fold models)"
        click.echo(f"  {name:<5} {scores_line(m)}  (n={m['n']})")
    if r.refit is not None:
        click.echo(f"  refit: {r.refit.path}")


@click.command("compare")
@config_option()
@click.option("--heads", default=",".join(default_heads()), show_default=True,
              help="comma-separated heads")
@click.option("--seeds", type=click.IntRange(1, MAX_SEEDS), default=3, show_default=True, help="seeds 0..N-1 per configuration")
@click.option("--leaderboard", "leaderboard_prefix", default=None, type=click.Path(dir_okay=False),
              help="output prefix for .md/.csv/.png [default: <runs>/<manifest>/leaderboard]")
@click.option("--all-runs", is_flag=True,
              help="also list every other finished run of this manifest (other options, fine-tuned runs); "
                   "with --heads '' list only those")
@click.option("--num-shards", type=click.IntRange(1), default=None,
              help="split the grid over N processes (default: torchrun/SLURM array variables, else 1)")
@click.option("--shard-index", type=click.IntRange(0), default=None,
              help="this process trains grid runs k with k % N == INDEX")
@click.option("--resamples", type=click.IntRange(100, MAX_RESAMPLES), default=N_RESAMPLES, show_default=True,
              help="bootstrap resamples for the intervals and paired tests")
@click.option("--no-ensembles", is_flag=True, help="leave out the seed-ensemble rows")
@batch_seeds_option
@threads_option
@click.option("--export-test", "export_dir", default=None, type=click.Path(file_okay=False),
              help="write each family's test predictions here in the dataset's own layout "
                   "(CLMLF: json list of {id, emotion_label}), to score where the test labels are")
@cv_options
@click.option("--stack/--no-stack", default=False, show_default=True,
              help="with --cv: also a row stacking the grid's families (a logistic regression on their out-of-fold "
                   "probabilities, scored out of fold on the same folds; with --refit it predicts every row "
                   "from the refit runs): runs/<manifest>/stack-cvK-<hash>/")
@data_options
@train_options
@head_flags(multi=True)
def compare_cmd(heads, seeds, leaderboard_prefix, all_runs, num_shards, shard_index, resamples, no_ensembles,
                batch_seeds, export_dir, cv, cv_seed, refit, stack, **kwargs):
    """Run a grid of heads x options x seeds (finished runs are skipped) and print the leaderboard.

    \b
    msa-cache compare --heads uni-text,uni-image,probe,late,ae-cat,ae-add,ab-cat,ab-add,mha \\
                      --latent 32,64,128 --seeds 3
    msa-cache compare --heads '' --all-runs   # every finished run, cached and fine-tuned
    msa-cache compare --heads ae-cat,mha --seeds 3 --num-shards 4 --shard-index 0   # 1/4 of the grid
    msa-cache compare --config grid.yaml --seeds 5   # the grid from a file (heads: [ae-cat, mha], ...)
    msa-cache compare --heads late,ae-cat,uni-text --cv 5 --stack   # + a row stacking the three

    Each run's line starts `run k/n` with an ETA from the runs trained so far.

    With shards, the leaderboard is written by the shard that finds every grid run
    finished, or afterwards by `compare` with the same grid or `--heads '' --all-runs`.
    """
    from msa_cache.study.compare import compare, leaderboard_markdown, summarise, write_leaderboard
    from msa_cache.study.submission import export_test

    partition = resolve_partition(num_shards, shard_index)
    grid = pop_head_options(kwargs, multi=True)
    runs_root = kwargs.pop("runs_root")
    manifest_path, caches = _caches(kwargs)
    train = pop_train_config(kwargs)
    head_list = [h.strip() for h in heads.split(",") if h.strip()]
    for h in head_list:
        if h not in head_names():
            raise click.BadParameter(f"unknown head '{h}'; choose from {', '.join(head_names())}", param_hint="--heads")
    if refit and not cv:
        raise click.UsageError("--refit goes with --cv K (it trains for the epoch count the folds chose)")
    if stack and not cv:
        raise click.UsageError("--stack goes with --cv K: it stacks the families' out-of-fold predictions")
    if cv and partition.count > 1:
        raise click.UsageError("--cv runs its grid in one process; leave out --num-shards/--shard-index "
                               "(and the torchrun/SLURM array variables) for a cross-validated grid")
    entries = compare(manifest_path, caches, head_list, grid, list(range(seeds)), train, runs_root, log=click.echo,
                      all_runs=all_runs, partition=partition, cv=cv, cv_seed=cv_seed, refit=refit,
                      batch_seeds=batch_seeds, stack=stack)
    pending = sum(e.pending for e in entries)
    if pending:
        click.echo(f"leaderboard not written: {pending} grid run(s) of other shards are not finished; the last "
                   f"shard to finish writes it, or run `msa-cache compare --heads '' --all-runs` afterwards")
        return
    if not entries:
        raise click.UsageError(f"no runs to list: give --heads, or --all-runs once {runs_root} has finished runs")
    manifest = read_manifest(manifest_path)
    monitor = monitor_for(train, manifest)
    entries = summarise(entries, monitor, ensembles=not no_ensembles, n_resamples=resamples)
    name = f"leaderboard-cv{cv}" if cv else "leaderboard"
    prefix = leaderboard_prefix or Path(runs_root) / manifest.name / name
    paths = write_leaderboard(entries, prefix, monitor)
    click.echo("\n" + leaderboard_markdown(entries, monitor))
    click.echo("written: " + ", ".join(str(p) for p in paths))
    if export_dir is not None:
        written = export_test(entries, manifest, export_dir)
        click.echo(f"test predictions of {len(written)} families written to {export_dir}")
