"""`msa-cache manifest <format> ...` and `msa-cache manifest info FILE`.

One subcommand per entry of the BUILDERS registry; its extra flags come from the
builder's @cli_options. All the work is in msa_cache.manifest.build.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import click

from msa_cache.manifest.build import build_manifest
from msa_cache.manifest.builders import BUILDERS
from msa_cache.manifest.info import summarize
from msa_cache.manifest.schema import ManifestError
from msa_cache.metrics import DEFAULT_MONITOR, MONITOR_NAMES


@click.group("manifest")
def manifest() -> None:
    """Build a dataset manifest (one Parquet file with the split), or show one."""


def _common_options() -> list[click.Option]:
    return [
        click.Option(["--root"], required=True, type=click.Path(path_type=Path),
                     help="dataset folder (stored as an absolute path in the manifest)"),
        click.Option(["-o", "--output"], type=click.Path(path_type=Path), default=None,
                     help="manifest file (default manifests/<name>.parquet)"),
        click.Option(["--name"], default=None, help="dataset name (default: from the folder or file name)"),
        click.Option(["--split"], default=None,
                     help="train/dev/test shares for data without a given split (default 80/10/10)"),
        click.Option(["--seed"], type=int, default=0, show_default=True, help="seed of the stratified split"),
        click.Option(["--drop-bad"], is_flag=True, help="leave out rows whose image or text is unusable"),
        click.Option(["--allow-skips"], is_flag=True,
                     help="write the manifest even when input lines cannot become rows (bad label, missing id "
                          "or label, duplicate id, malformed line; each is listed under its reason); "
                          "without it such a build exits with an error"),
        click.Option(["--monitor"], type=click.Choice(MONITOR_NAMES), default=None,
                     help="dev metric recorded as the dataset's default for fit/compare "
                          f"[default: what the format's papers report; table: {DEFAULT_MONITOR}]"),
    ]


def _builder_options(builder) -> list[click.Option]:
    params = inspect.signature(builder).parameters
    return [
        click.Option(["--" + name.replace("_", "-")], default=None, help=help_text,
                     required=params[name].default is inspect.Parameter.empty)
        for name, help_text in builder.cli_options.items()
    ]


def _format_command(fmt: str, builder) -> click.Command:
    def run(root, output, name, split, seed, drop_bad, allow_skips, monitor, **builder_args):
        try:
            summary = build_manifest(fmt, root, output, name=name, split=split, seed=seed,
                                     drop_bad=drop_bad, monitor=monitor, allow_skips=allow_skips, **builder_args)
        except ManifestError as e:
            raise click.ClickException(str(e)) from None
        click.echo(summary.format())

    doc = (builder.__doc__ or fmt).strip().splitlines()[0]
    return click.Command(fmt, callback=run, help=doc, short_help=doc,
                         params=_common_options() + _builder_options(builder))


for _fmt, _builder in BUILDERS.items():
    manifest.add_command(_format_command(_fmt, _builder))


@manifest.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--max-listed", type=click.IntRange(0), default=20, show_default=True, help="bad rows to list")
def info(file: Path, max_listed: int) -> None:
    """Rows per split and label, and the bad rows, of a manifest FILE."""
    try:
        summary = summarize(file)
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.format(max_listed))
