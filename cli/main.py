"""`msa-cache`: the command group. Each verb lives in its own module of this
package and is a thin layer over the `msa_cache` Python API."""
from __future__ import annotations

import os

import click

from msa_cache import __version__
from msa_cache.errors import UserError

# Errors a user can fix print as one line `error: ...` and exit 2: the project's own UserError
# (ManifestError, CacheError, ...) and the standard errors the API raises for bad input.
_USER_ERRORS = (UserError, ValueError, OSError, KeyError, click.ClickException)
USER_ERROR_EXIT = 2
UNEXPECTED_EXIT = 1


class OneLineError(click.ClickException):
    """Printed as `error: <message>` on stderr (click's own would print `Error: ...`)."""

    def __init__(self, message: str, exit_code: int = USER_ERROR_EXIT):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("MSA_CACHE_DEBUG", "").strip() not in ("", "0")


MAX_MESSAGE = 2000  # characters: a message repeating a huge user value is cut (the values are cut at the source too)


def _one_line(text: str) -> str:
    return " ".join(str(text)[:MAX_MESSAGE].split())


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.UsageError):
            raise  # click's own: usage errors already print one line with exit 2
        except Exception as e:
            if _debug(ctx):
                if isinstance(e, click.ClickException) and isinstance(e.__context__, Exception):
                    raise e.__context__  # a command turned an API error into one line: show the original
                raise
            if isinstance(e, OneLineError):
                raise
            if isinstance(e, click.ClickException):
                raise OneLineError(_one_line(e.format_message())) from None
            if isinstance(e, _USER_ERRORS):
                msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
                raise OneLineError(_one_line(msg) or type(e).__name__) from None
            raise OneLineError(f"unexpected error ({type(e).__name__}: {_one_line(e)[:300]}); "
                               "rerun with --debug (or MSA_CACHE_DEBUG=1) for the traceback and report it",
                               UNEXPECTED_EXIT) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="msa-cache")
@click.option("--debug", is_flag=True, help="show the full traceback of an error (also: MSA_CACHE_DEBUG=1)")
def main(debug):
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
    from msa_cache_cli.export_run import card_cmd, export_run_cmd
    from msa_cache_cli.extract import extract_cmd
    from msa_cache_cli.finetune import finetune_cmd
    from msa_cache_cli.fit import compare_cmd, fit_cmd
    from msa_cache_cli.predict import predict_cmd
    from msa_cache_cli.report import report_cmd
    from msa_cache_cli.tune import tune_cmd
    from msa_cache_cli.manifest import manifest as manifest_group

    for cmd in (manifest_group, extract_cmd, cache_group, fit_cmd, compare_cmd, tune_cmd, finetune_cmd,
                predict_cmd, export_cmd, export_run_cmd, card_cmd, analyze_group, explain_cmd, report_cmd, demo_cmd):
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
