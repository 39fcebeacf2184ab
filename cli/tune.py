"""`msa-cache tune`: an Optuna search over one head's declared space; thin layer over msa_cache.study.tune."""
from __future__ import annotations

import click

from msa_cache import threads
from msa_cache.heads import get_head, make_config
from msa_cache.manifest import read_manifest

from msa_cache_cli.config_file import config_option
from msa_cache_cli.options import (
    MAX_SEEDS, cv_options, data_options, head_flags, head_names, pop_head_options, pop_train_config, resolve_manifest,
    tensorboard_option, threads_option, train_options,
)


@click.command("tune")
@config_option()
@click.option("--head", required=True, type=click.Choice(head_names()), help="which head to tune")
@click.option("--trials", type=click.IntRange(1), required=True,
              help="trials in the study in total, over every process that shares it")
@click.option("--storage", type=click.Path(dir_okay=False), default=None,
              help="Optuna journal file shared by the processes [default: <runs>/<manifest>/tune-<study>.journal]")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="seconds after which this process starts no new trial")
@click.option("--seeds", type=click.IntRange(1, MAX_SEEDS), default=3, show_default=True,
              help="run the best config over seeds 0..K-1 at the end")
@click.option("--sampler-seed", type=int, default=None,
              help="seed of the TPE sampler (a reproducible search in one process)")
@click.option("--dry-run", is_flag=True, help="print the search space and exit")
@tensorboard_option
@threads_option
@cv_options
@data_options
@train_options
@head_flags(multi=False)
def tune_cmd(head, trials, storage, timeout, seeds, sampler_seed, dry_run, tensorboard, cv, cv_seed, refit, **kwargs):
    """Search a head's hyper-parameters on the dev split with Optuna (median pruning).

    The space is declared in the head's Config and the trainer's options; an option set
    on the command line (e.g. --latent 64, --lr 1e-3) is fixed and leaves the space.
    Every trial is a run directory (seed 0); start the same command in several processes
    (SLURM array, torchrun) to share one study. With --cv K a trial is K fold runs of
    train+dev pooled, scored out of fold (pruned on fold 0's per-epoch held-out score).
    Needs `pip install "msa-cache[tune]"`.

    \b
    msa-cache tune --head ae-cat --trials 30 --dry-run
    msa-cache tune --head ae-cat --trials 30 --text-pool mean --seeds 3
    msa-cache tune --head ae-cat --trials 30 --cv 5 --refit
    msa-cache tune --config tune.yaml --trials 50   # options from a file (an option set there is fixed)
    """
    from msa_cache.fit.features import resolve_caches
    from msa_cache.study.tune import fixed_options, format_space, search_space, tune

    options = pop_head_options(kwargs, multi=False)
    make_config(head, options)  # an option this head lacks fails here, before any work
    threads.use(get_head(head).compute)
    runs_root = kwargs.pop("runs_root")
    train = pop_train_config(kwargs)
    if refit and not cv:
        raise click.UsageError("--refit goes with --cv K (it trains for the epoch count the folds chose)")
    fixed = fixed_options(options, train)
    params = search_space(head, fixed)
    if dry_run:
        scored = f"{cv}-fold out-of-fold" if cv else "dev"
        monitor = train.monitor or "monitor (the dataset's default)"
        click.echo(f"search space of {head} ({len(params)} options; trials train seed 0, {scored} {monitor}):")
        click.echo(format_space(params))
        if fixed:
            click.echo("fixed: " + ", ".join(sorted(fixed)))
        return
    manifest_path = resolve_manifest(kwargs.pop("manifest"))
    caches = resolve_caches(read_manifest(manifest_path), kwargs.pop("cache_root"), kwargs.pop("text_cache"),
                            kwargs.pop("image_cache"), kwargs.pop("clip_cache"))
    result = tune(manifest_path, caches, head, trials, options, train, runs_root, storage=storage, timeout=timeout,
                  seeds=seeds, sampler_seed=sampler_seed, cv=cv, cv_seed=cv_seed, refit=refit, log=click.echo,
                  tensorboard=tensorboard)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    click.echo(f"study {result.study_name}: {counts}; this process ran {result.ran} trial(s) in {result.seconds:.0f}s")
