"""`msa-cache finetune`: a head (or a baseline) with its encoders in the loop; a thin layer over
msa_cache.finetune. Run directories go next to the cached-feature runs, in the same format."""
from __future__ import annotations

import click

from msa_cache.encoders.hub import EncoderUnavailable
from msa_cache.finetune.config import BASELINES, VISUALBERT_DEFAULT, FinetuneConfig, FinetuneSpec

from msa_cache_cli.config_file import config_option
from msa_cache_cli.extract import EncoderName
from msa_cache_cli.options import (
    dataclass_options, device_option, head_flags, head_names, pop_head_options, resolve_manifest, tensorboard_option,
    threads_option,
)


def _unfreeze(ctx, param, value: str) -> list[str]:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if parts == ["none"]:
        return []
    bad = [p for p in parts if p not in ("text", "image")]
    if bad:
        raise click.BadParameter(f"'{value}': expected text, image, text,image or none")
    return parts



@click.command("finetune")
@config_option(reproduces_runs=True)
@click.option("--head", type=click.Choice(head_names()), default=None, help="the head to train (or --baseline)")
@click.option("--baseline", type=click.Choice(BASELINES), default=None,
              help="clip: CLIP towers + classifier; visualbert: VisualBERT over --encoder's patch features")
@click.option("--encoder", "encoders", multiple=True, type=EncoderName(),
              help="repeatable: one text and one image encoder (registry name, hf:ORG/NAME or a model folder); "
                   "--baseline visualbert: its image encoder")
@click.option("--model", default=None,
              help="baseline weights, hub id or folder [clip: openai/clip-vit-base-patch32; "
                   "visualbert: uclanlp/visualbert-vqa-coco-pre]")
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
    from msa_cache.finetune.train import finetune_run

    threads.use("large")  # the encoders train
    if (head is None) == (baseline is None):
        raise click.UsageError("give either --head HEAD (with --encoder ...) or --baseline clip|visualbert")
    options = pop_head_options(kwargs, multi=False)
    if baseline == "clip":
        if encoders:
            raise click.UsageError("--baseline clip takes its weights from --model, not --encoder")
        names = [model] if model else []
    elif baseline == "visualbert":
        if len(encoders) != 1:
            raise click.UsageError("--baseline visualbert needs exactly one image encoder: --encoder vit")
        names = [model or VISUALBERT_DEFAULT, encoders[0]]
    else:
        if model:
            raise click.UsageError("--model is for --baseline clip|visualbert; heads take --encoder")
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
            click.echo(f"  {split:<5} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
                       f"weighted-F1 {m['weighted_f1']:.4f}  (n={m['n']})")
