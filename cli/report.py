"""`msa-cache report RUNS_DIR`: a self-contained HTML report (thin layer over msa_cache.report)."""
from __future__ import annotations

import shlex

import click
from click.core import ParameterSource

from msa_cache.metrics import MONITOR_NAMES
from msa_cache.report import REPORT_FILE
from msa_cache.study.stats import MAX_RESAMPLES, N_RESAMPLES


@click.command("report")
@click.argument("runs_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help=f"HTML file to write  [default: RUNS_DIR/{REPORT_FILE}]")
@click.option("--explain", "explain", type=click.IntRange(0), default=0, show_default=True,
              help="draw N dev examples of the best explainable run (needs its caches and images; "
                   "skipped with a note in the report where they are not found)")
@click.option("--monitor", type=click.Choice(MONITOR_NAMES), default=None,
              help="metric the rows are ranked and tested on  [default: the one the runs selected on]")
@click.option("--resamples", type=click.IntRange(100, MAX_RESAMPLES), default=N_RESAMPLES, show_default=True,
              help="bootstrap resamples for the intervals and paired tests")
@click.option("--no-ensembles", is_flag=True, help="leave out the seed-ensemble rows")
def report_cmd(runs_dir, out, explain, monitor, resamples, no_ensembles):
    """Write one self-contained report.html about the finished runs of one manifest
    (runs/<manifest>/): the leaderboard with intervals, p-values (and Holm's adjustment)
    and links to the runs' cards, a dot-and-interval plot, per-class scores, confusion
    matrices, training curves, the oracle analysis and, with --explain N, a few explain
    pictures. Images are inlined; no script, no external URL:
    it can be mailed.

    \b
    msa-cache report runs/mvsa-single
    msa-cache report runs/mvsa-single -o mvsa-report.html --explain 3
    """
    from msa_cache.report import write_report

    path = write_report(runs_dir, out, explain=explain, monitor=monitor, n_resamples=resamples,
                        ensembles=not no_ensembles, command=_as_run(click.get_current_context()))
    click.echo(str(path))


def _as_run(ctx: click.Context) -> str:
    """The command as it was run, for the report's footer: the arguments given on the command line (or
    from the environment), in the order of the options, defaults left out as the user left them out."""
    parts = ["msa-cache", "report"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            parts.append(str(value))
        elif param.is_flag:
            parts.append(param.opts[-1] if value else (param.secondary_opts or param.opts)[-1])
        else:
            parts += [param.opts[-1], str(value)]
    return shlex.join(parts)
