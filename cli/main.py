"""`msa-cache`: the command group. Each verb lives in its own module of this
package and is a thin layer over the `msa_cache` Python API."""
from __future__ import annotations

import os

import click

from msa_cache import __version__

# Errors a user can fix (bad paths, bad data, bad options) print as one line;
# MSA_CACHE_DEBUG=1 shows the traceback instead.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, KeyError)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _USER_ERRORS as e:
            if os.environ.get("MSA_CACHE_DEBUG"):
                raise
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise click.ClickException(str(msg)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="msa-cache")
def main():
    """Multimodal sentiment analysis on cached frozen-encoder features.

    \b
    manifest -> extract -> cache -> fit / compare -> analyze
    """


def _register() -> None:
    from msa_cache_cli.analyze import analyze_group
    from msa_cache_cli.cache import cache_group
    from msa_cache_cli.demo import demo_cmd
    from msa_cache_cli.explain import explain_cmd
    from msa_cache_cli.export import export_cmd
    from msa_cache_cli.extract import extract_cmd
    from msa_cache_cli.finetune import finetune_cmd
    from msa_cache_cli.fit import compare_cmd, fit_cmd
    from msa_cache_cli.predict import predict_cmd
    from msa_cache_cli.manifest import manifest as manifest_group

    for cmd in (manifest_group, extract_cmd, cache_group, fit_cmd, compare_cmd, finetune_cmd,
                predict_cmd, export_cmd, analyze_group, explain_cmd, demo_cmd):
        _check_unique_flags(cmd)
        main.add_command(cmd)


def _check_unique_flags(cmd: click.Command) -> None:
    """Generated head flags must never shadow a command's own flag (click would only warn)."""
    seen: set[str] = set()
    for p in cmd.params:
        for flag in [*p.opts, *p.secondary_opts]:
            if flag in seen:
                raise RuntimeError(f"`msa-cache {cmd.name}` defines {flag} twice; rename the head Config field")
            seen.add(flag)
    for sub in getattr(cmd, "commands", {}).values():
        _check_unique_flags(sub)


_register()

if __name__ == "__main__":
    main()
