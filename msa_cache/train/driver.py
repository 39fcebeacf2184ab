"""One run, whichever mode trains it: the steps `fit` and `finetune` share around the epoch loop.

    resolve    the mode fills its spec's defaults and says which folder its identity maps to
    skip       a finished folder is read back, not retrained (--tensorboard: events from history.jsonl)
    prepare    checks and loading that must pass before any folder is made
    train      the mode trains into `seed-K.tmp-<pid>/` and writes the run (rundir.write_run); the
               folder is renamed when complete (rundir.build_run_dir)

A mode (fit/trainer.CachedMode, finetune/train.FinetuneMode) supplies `resolve`, `prepare` and
`train`; every epoch record is appended to history.jsonl (and TensorBoard) by the hooks given to
its `train`, after its own hooks.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from msa_cache.train.loop import EpochHook, RunResult
from msa_cache.train.rundir import append_history, build_run_dir, is_finished, read_metrics
from msa_cache.train.tensorboard_log import history_events, run_events


class RunMode(Protocol):
    def resolve(self, runs_root: str | Path) -> Path:
        """Resolve the spec (defaults filled, as its identity is hashed) and return its run folder."""

    def prepare(self) -> None:
        """Refuse what cannot train and load what training needs; runs only when the run is not finished."""

    def train(self, tmp: Path, record_hooks: list[EpochHook]) -> dict:
        """Train, write the run into `tmp` and return its metrics; call `record_hooks` after each epoch
        (after the mode's own hooks, which may add fields to the record)."""


def drive_run(mode: RunMode, runs_root: str | Path, tensorboard: bool = False) -> RunResult:
    """Train the mode's run unless its folder is already finished; return its metrics.
    tensorboard: also write the epochs as TensorBoard events in <run>/tensorboard (a finished run: from its
    history.jsonl); not part of the identity."""
    out = mode.resolve(runs_root)
    if is_finished(out):
        if tensorboard:
            history_events(out)
        return RunResult(out, read_metrics(out), skipped=True)
    mode.prepare()
    t0 = time.time()

    def work(tmp: Path) -> dict:
        with run_events(tmp, tensorboard) as events:
            return mode.train(tmp, [lambda _, record: append_history(tmp, record), *([events] if events else [])])

    metrics = build_run_dir(out, work)
    return RunResult(out, metrics, skipped=False, seconds=time.time() - t0)
