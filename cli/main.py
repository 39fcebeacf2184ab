"""`msa-cache`: the command group. Each verb lives in its own module of this
package and is a thin layer over the `msa_cache` Python API."""
from __future__ import annotations

import importlib
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


def usage_error_line(e: click.UsageError) -> str:
    """A click usage error (unknown flag, bad value, missing option) in the project's one-line form:
    `error: <what> (msa-cache CMD): see 'msa-cache CMD --help'`, instead of click's usage block + `Error:`."""
    command = e.ctx.command_path if e.ctx is not None else "msa-cache"
    return f"error: {_one_line(e.format_message())} ({command}): see '{command} --help'"


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's standalone main, with its usage errors printed as our one line (exit 2)."""
        import sys

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            click.echo(usage_error_line(e), err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int: click's exit code (e.g. 0 after --help)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.UsageError):
            raise  # click's own: main() prints usage errors as one line, exit 2
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


class _LazyGroup(_Group):
    """Commands from COMMANDS, each imported on first use (click's documented LazyGroup pattern)."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx, name):
        if name in COMMANDS and name not in self.commands:
            self.add_command(load_command(name), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        """As click's, with the short helps of commands not yet imported read from COMMANDS."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            cmd = self.commands.get(name)
            if cmd is None:
                cmd = click.Command(name, help=COMMANDS[name][1])  # a stand-in that only shortens the text
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="msa-cache")
@click.option("--debug", is_flag=True, help="show the full traceback of an error (also: MSA_CACHE_DEBUG=1)")
def main(debug):
    """Multimodal sentiment analysis on cached frozen-encoder features.

    \b
    manifest -> extract -> cache -> fit / compare -> analyze
    """


# Every command: name -> ("module:attr", the first paragraph of its help). A command's module (and what it
# imports: torch, transformers, ...) is imported only when that command runs or shows its own help
# (click's LazyGroup pattern); `msa-cache --help` lists the short helps from this table.
# tests/test_cli_lazy.py checks each text is the command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("msa_cache_cli.analyze:analyze_group", "Analyses of finished runs."),
    "cache": ("msa_cache_cli.cache:cache_group", "Inspect and check feature caches (cache/<manifest>/<encoder>)."),
    "card": ("msa_cache_cli.export_run:card_cmd",
             "(Re)write README.md, the Hugging Face model card, of finished runs (runs made before cards "
             "existed have none; new runs get theirs when they finish)."),
    "compare": ("msa_cache_cli.fit:compare_cmd",
                "Run a grid of heads x options x seeds (finished runs are skipped) and print the leaderboard."),
    "demo": ("msa_cache_cli.demo:demo_cmd",
             "manifest -> extract (minilm + efficientnet-lite0, offline) -> compare, ending with the leaderboard."),
    "evaluate": ("msa_cache_cli.evaluate:evaluate_cmd",
                 "Score finished cached-feature runs with a modality dropped, shuffled or noisy, or on another "
                 "manifest."),
    "explain": ("msa_cache_cli.explain:explain_cmd",
                "Draw one example's image with the head's weights over its patch grid as a heat map, "
                "and its text tokens shaded by their weights (a 1200 x 700 PNG)."),
    "export": ("msa_cache_cli.export_run:export_run_cmd",
               "Write a finished run (cached or fine-tuned) to the new folder OUT for the Hugging Face Hub: "
               "model.safetensors, config.json, the model card README.md, metrics.json (and history, confusion "
               "plot, TensorBoard events where the run has them). `msa-cache predict OUT` reads it like the run."),
    "export-encoder": ("msa_cache_cli.export:export_cmd",
                       "Write a fine-tune run's fine-tuned encoder to the model folder OUT, which "
                       "`extract --encoder OUT` (and finetune, predict) load like any other encoder."),
    "extract": ("msa_cache_cli.extract:extract_cmd",
                "Encode every manifest row with frozen encoders into a sharded HDF5 cache."),
    "finetune": ("msa_cache_cli.finetune:finetune_cmd",
                 "Fine-tune a head with its encoders in the loop (or a baseline), staged: head first, then encoders."),
    "fit": ("msa_cache_cli.fit:fit_cmd", "Train one head on cached features (one run directory per seed)."),
    "manifest": ("msa_cache_cli.manifest:manifest",
                 "Build a dataset manifest (one Parquet file with the split), or show one."),
    "predict": ("msa_cache_cli.predict:predict_cmd", "Predict with a finished run (cached or fine-tuned), a folder or a Hub repo id."),
    "report": ("msa_cache_cli.report:report_cmd",
               "Write one self-contained report.html about the finished runs of one manifest "
               "(runs/<manifest>/): the leaderboard with intervals, p-values (and Holm's adjustment) "
               "and links to the runs' cards, a dot-and-interval plot, per-class scores, confusion "
               "matrices, training curves, the oracle analysis and, with --explain N, a few explain "
               "pictures. Images are inlined; no script, no external URL: it can be mailed."),
    "tune": ("msa_cache_cli.tune:tune_cmd",
             "Search a head's hyper-parameters on the dev split with Optuna (median pruning)."),
}


def load_command(name: str) -> click.Command:
    """Import command `name`'s module and return the command (flags checked once, on load)."""
    module, _, attr = COMMANDS[name][0].partition(":")
    cmd = getattr(importlib.import_module(module), attr)
    _check_unique_flags(cmd)
    return cmd


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


if __name__ == "__main__":
    main(prog_name="msa-cache")
