"""`msa-cache extract`: encode every manifest row with frozen encoders into the HDF5 cache.

All the work is in msa_cache.extract; this only parses options and prints the report.
"""
from __future__ import annotations

import click

from msa_cache.cache.schema import DEFAULT_SHARD_SIZE, FLOAT_DTYPES, CacheError
from msa_cache.encoders import ENCODERS, EncoderUnavailable, check_encoder_name
from msa_cache.extract import default_workers, extract
from msa_cache.extract.lock import LockedError
from msa_cache.manifest import CLEANERS, ManifestError

from msa_cache_cli.options import device_option


class EncoderName(click.ParamType):
    """A registry name, hf:ORG/NAME or a model folder (choices come from the ENCODERS registry)."""

    name = "encoder"

    def convert(self, value, param, ctx):
        try:
            return check_encoder_name(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _encoder_help() -> str:
    offline = [n for n, e in sorted(ENCODERS.items()) if e.offline]
    return (f"repeatable; one of {', '.join(sorted(ENCODERS))} (offline: {', '.join(offline)}), "
            "hf:ORG/NAME, or a local model folder")


def _layers(ctx, param, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}': expected comma-separated layer numbers such as -1,-2,-3") from None


@click.command("extract")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False), help="manifest Parquet file")
@click.option("--encoder", "encoders", required=True, multiple=True, type=EncoderName(), help=_encoder_help())
@click.option("--out", default="cache", show_default=True, type=click.Path(file_okay=False),
              help="cache root; features go to OUT/<manifest>/<encoder>/")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="rows per forward pass (halves itself on CUDA out-of-memory)")
@click.option("--max-length", default=128, show_default=True, type=click.IntRange(2),
              help="text tokens per row (padding/truncation)")
@click.option("--clean", default="none", show_default=True, type=click.Choice(sorted(CLEANERS)),
              help="text cleaning applied before tokenising; seed000-v2: seed 000's four rules "
                   "(lowercase, URLs -> <url>, @user -> <USER>, hashtags split); seed000-v1: its first, "
                   "superseded version (rewrote e-mail addresses), kept to reproduce old caches")
@click.option("--layers", callback=_layers, default=None, metavar="K,K,..",
              help="also store these hidden layers' token states, e.g. -1,-2,-3")
@click.option("--pooled-only", is_flag=True, help="store pooled vectors only (small cache, no tokens)")
@click.option("--dtype", default="float16", show_default=True, type=click.Choice(FLOAT_DTYPES))
@click.option("--shard-size", default=DEFAULT_SHARD_SIZE, show_default=True, type=click.IntRange(1),
              help="rows per HDF5 shard file")
@click.option("--num-shards", type=click.IntRange(1), default=None,
              help="split the work over N processes (default: torchrun/SLURM array variables, else 1)")
@click.option("--shard-index", type=click.IntRange(0), default=None,
              help="this process writes shards k with k % N == INDEX")
@click.option("--workers", type=click.IntRange(0), default=None,
              help=f"DataLoader workers decoding images/tokenising [default: min(4, cpus) = {default_workers()}]")
@device_option()
@click.option("--autocast", default="auto", show_default=True, type=click.Choice(["auto", "fp16", "bf16", "off"]),
              help="mixed precision on CUDA (auto: fp16 on CUDA, off on CPU)")
@click.option("--progress/--no-progress", default=True, show_default=True, help="progress bar with samples/s")
def extract_cmd(manifest, encoders, out, batch_size, max_length, clean, layers, pooled_only, dtype, shard_size,
                num_shards, shard_index, workers, device, autocast, progress):
    """Encode every manifest row with frozen encoders into a sharded HDF5 cache.

    \b
    msa-cache extract --manifest manifests/mvsa-single.parquet --encoder minilm --encoder efficientnet-lite0
    msa-cache extract --manifest m.parquet --encoder vit --num-shards 2 --shard-index 0   # on GPU/machine 0

    Running the same command again resumes: finished shards are kept.
    """
    try:
        report = extract(manifest, list(encoders), out, batch_size=batch_size, max_length=max_length, clean=clean,
                         layers=layers, pooled_only=pooled_only, dtype=dtype, shard_size=shard_size,
                         num_shards=num_shards, shard_index=shard_index, workers=workers, device=device,
                         autocast=autocast, progress=progress)
    except (CacheError, EncoderUnavailable, LockedError, ManifestError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(report.summary())
