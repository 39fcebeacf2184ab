"""`msa-cache extract`: encode every manifest row with frozen encoders into the HDF5 cache.

All the work is in msa_cache.extract; this only parses options and prints the report.
"""
from __future__ import annotations

import click

from msa_cache.cache.schema import CacheError
from msa_cache.encoders import ENCODERS, EncoderUnavailable, check_encoder_name
from msa_cache.extract.config import ExtractConfig
from msa_cache.extract.lock import LockedError
from msa_cache.manifest import ManifestError

from msa_cache_cli.config_file import config_option
from msa_cache_cli.options import dataclass_options, device_option, threads_option


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
@config_option()
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False), help="manifest Parquet file")
@click.option("--encoder", "encoders", required=True, multiple=True, type=EncoderName(), help=_encoder_help())
@click.option("--out", default="cache", show_default=True, type=click.Path(file_okay=False),
              help="cache root; features go to OUT/<manifest>/<encoder>/")
@dataclass_options(ExtractConfig, {
    "layers": lambda f: click.option("--layers", callback=_layers, default=None, metavar="K,K,..",
                                     help=f.metadata["help"]),
    "pooled_only": lambda f: click.option("--pooled-only", is_flag=True, help=f.metadata["help"]),
    "device": lambda f: device_option(f.default)})
@threads_option
def extract_cmd(manifest, encoders, out, **options):
    """Encode every manifest row with frozen encoders into a sharded HDF5 cache.

    \b
    msa-cache extract --manifest manifests/mvsa-single.parquet --encoder minilm --encoder efficientnet-lite0
    msa-cache extract --manifest m.parquet --encoder vit --num-shards 2 --shard-index 0   # on GPU/machine 0
    msa-cache extract --config extract.yaml --shard-index 1   # options from a YAML file, one overridden

    Running the same command again resumes: finished shards are kept.
    """
    from msa_cache import threads
    from msa_cache.extract import precheck

    try:
        # A cache this would refuse (stale, other settings) is refused here, before torch and any model load.
        precheck.refuse_before_loading(manifest, list(encoders), out, **options)
        from msa_cache.extract import extract

        threads.use("large")
        report = extract(manifest, list(encoders), out, **options)
    except (CacheError, EncoderUnavailable, LockedError, ManifestError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(report.summary())
