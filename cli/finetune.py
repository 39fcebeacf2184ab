"""`msa-cache finetune`: a head (or a baseline) with its encoders in the loop; a thin layer over
msa_cache.finetune. Run directories go next to the cached-feature runs, in the same format."""
from __future__ import annotations

import click

from msa_cache.encoders.hub import EncoderUnavailable
from msa_cache.finetune.baselines import CATALOG as BASELINES  # names and --help lines, without their code
from msa_cache.finetune.config import FinetuneConfig, FinetuneSpec, parse_unfreeze
from msa_cache.metrics import scores_line

from msa_cache_cli.config_file import config_option
from msa_cache_cli.extract import EncoderName
from msa_cache_cli.options import (
    dataclass_options, device_option, head_flags, head_names, pop_head_options, resolve_manifest, tensorboard_option,
    threads_option,
)


def _unfreeze(ctx, param, value: str) -> list[str]:
    try:
        return parse_unfreeze(value)
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--unfreeze ")) from None  # click names the flag


@click.command("finetune")
@config_option(reproduces_runs=True)
@click.option("--head", type=click.Choice(head_names()), default=None, help="the head to train (or --baseline)")
@click.option("--baseline", type=click.Choice(list(BASELINES)), default=None,
              help="; ".join(f"{b.name}: {b.summary}" for b in BASELINES.values()))
@click.option("--encoder", "encoders", multiple=True, type=EncoderName(),
              help="repeatable: one text and one image encoder (registry name, hf:ORG/NAME or a model folder); "
                   "--baseline visualbert: its image encoder")
@click.option("--model", default=None,
              help="baseline weights, hub id or folder ["
                   + "; ".join(f"{b.name}: {b.default_model}" for b in BASELINES.values()) + "]")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="manifest Parquet file [default: the only one in manifests/]")
@click.option("--runs", "runs_root", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", "seeds", type=click.IntRange(0, 2**32 - 1), multiple=True, default=(0,), show_default=True, help="repeatable")
@tensorboard_option
@threads_option
@dataclass_options(FinetuneConfig, {
    "unfreeze": lambda f: click.option("--unfreeze", callback=_unfreeze, default="text,image", show_default=True,
                                       help="which encoders to unfreeze: text, image, text,image or none"),
    "device": lambda f: device_option(f.default)}, order=FinetuneConfig.FLAG_ORDER)
@head_flags(multi=False)
def finetune_cmd(head, baseline, encoders, model, manifest, runs_root, seeds, tensorboard, **kwargs):
    """Fine-tune a head with its encoders in the loop (or a baseline), staged: head first, then encoders.

    \b
    msa-cache finetune --head mdse --encoder roberta --encoder vit
    msa-cache finetune --head ae-cat --encoder minilm --encoder efficientnet-lite0 --max-epochs 3
    msa-cache finetune --baseline clip [--model openai/clip-vit-base-patch32]
    msa-cache finetune --baseline visualbert --encoder vit
    msa-cache finetune --config runs/M/finetune-FAMILY/seed-0/command.yaml   # that run again (skipped if finished)
    """
    from msa_cache import threads
    from msa_cache.finetune.baselines import get_baseline
    from msa_cache.finetune.train import finetune_run

    threads.use("large")  # the encoders train
    if (head is None) == (baseline is None):
        raise click.UsageError(f"give either --head HEAD (with --encoder ...) or --baseline {'|'.join(BASELINES)}")
    options = pop_head_options(kwargs, multi=False)
    if baseline is not None:
        try:
            names = get_baseline(baseline).spec_encoders(model, list(encoders))
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    else:
        if model:
            raise click.UsageError(f"--model is for --baseline {'|'.join(BASELINES)}; heads take --encoder")
        names = list(encoders)
    train = FinetuneConfig(**kwargs)
    manifest_path = resolve_manifest(manifest)
    for seed in seeds:
        spec = FinetuneSpec(str(manifest_path), baseline or head, names, baseline, dict(options), train, seed)
        try:
            r = finetune_run(spec, runs_root, log=click.echo, tensorboard=tensorboard)
        except EncoderUnavailable as e:
            raise click.ClickException(str(e)) from None
        state = "already finished, skipped" if r.skipped else f"trained in {r.seconds:.1f}s"
        click.echo(f"{r.path}  ({state})")
        for split, m in r.metrics.items():
            click.echo(f"  {split:<5} {scores_line(m)}  (n={m['n']})")
