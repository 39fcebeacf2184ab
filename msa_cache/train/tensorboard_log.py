"""`--tensorboard`: a run's per-epoch history as TensorBoard event files in `<run>/tensorboard/`.

Written by an epoch hook (torch.utils.tensorboard.SummaryWriter, step = epoch) into the run's tmp
folder, so they move with it when the run is renamed; `tensorboard --logdir runs/<manifest>` then
shows every run under its folder name. The tags are the same for every head and mode, so runs
compare in one chart:

    loss/train                     the mean training loss (train_loss)
    loss_terms/<term>              the loss terms (train_ce, train_mse_text, ...)
    dev/<metric>                   dev accuracy, macro_f1, weighted_f1 (a CV fold: its held-out rows)
    lr/<group>, time/<what>, memory/<what>, other/<key>   whatever else the record holds
    selected/<split>_<metric>      the selected model's scores (metrics.json), at its best epoch
    hparams                        the run's settings (config.json's spec and resolved optimiser) with
                                   the selected scores as its metrics: the HParams dashboard compares runs

The flag changes no result, so it is not part of the run's identity. For a run that is already
finished, events are written from its history.jsonl (once: a run that has a tensorboard/ folder
keeps it), so the logdir shows it too.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

from msa_cache.atomic import building_folder
from msa_cache.errors import UserError
from msa_cache.train.rundir import FINISHED_MARKER, HISTORY_FILE, read_history, read_metrics
from msa_cache.metrics import METRIC_KEYS

TB_DIR = "tensorboard"
INSTALL_HINT = "pip install 'msa-cache[tb]'"


def require_tensorboard() -> None:
    """UserError naming the extra when the tensorboard package is missing (checked before any work)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package, which is not installed",
                        hint=INSTALL_HINT) from None


# Tags shared by every run, so `tensorboard --logdir runs/<manifest>` overlays them: record keys named
# outright first, then by prefix (the rest of the key follows the tag's group), else other/<key>.
_EXACT_TAGS = {"train_loss": "loss/train", "dev_seconds": "time/dev_seconds", "seconds": "time/epoch_seconds"}
_PREFIX_TAGS = (("train_", "loss_terms/"), ("dev_", "dev/"), ("lr_", "lr/"), ("peak_", "memory/peak_"))


def _tag(key: str) -> str:
    if key in _EXACT_TAGS:
        return _EXACT_TAGS[key]
    for prefix, group in _PREFIX_TAGS:
        if key.startswith(prefix):
            return group + key[len(prefix):]
    return f"other/{key}"


def scalar_tags(record: dict) -> dict[str, float]:
    """tag -> value for the numbers of one epoch record (history.jsonl)."""
    return {_tag(key): float(value) for key, value in record.items()
            if key != "epoch" and not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value)}


def run_hparams(config: dict) -> dict[str, float | str | bool]:
    """The HParams dashboard's columns for one run, from its config.json: the spec's head, encoders, seed,
    head and train options, and the resolved optimiser (config.json's "optimizer", beside the spec).
    Lists become text; unset (None) values are left out (the plugin takes numbers, text and booleans)."""
    spec = config.get("spec") or {}
    flat: dict[str, object] = {"mode": config.get("mode"), "head": spec.get("head"), "seed": spec.get("seed"),
                               "encoders": spec.get("encoders")}
    for group in ("head_options", "train"):
        flat.update({f"{group}.{k}": v for k, v in (spec.get(group) or {}).items()})
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict):
        flat.update({f"optimizer.{k}": v for k, v in optimizer.items()})
    out: dict[str, float | str | bool] = {}
    for key, value in flat.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


class TensorBoardLog:
    """An epoch hook (train/loop.train_epochs' on_epoch_end) writing each record's scalars at step = epoch."""

    def __init__(self, logdir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))
        self.logged: set[int] = set()

    def __call__(self, epoch: int, record: dict) -> None:
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, epoch)
        self.logged.add(int(epoch))
        self.writer.flush()  # a watching tensorboard sees each epoch as it ends

    def finish(self, run_folder: Path) -> None:
        """After the run's files are written: the history records the hook did not see (the probe's
        closed-form fit has no epoch loop) and the selected model's scores."""
        best_epoch = 0
        for record in read_history(run_folder) if (run_folder / HISTORY_FILE).is_file() else []:
            if "epoch" in record and int(record["epoch"]) not in self.logged:
                self(int(record["epoch"]), record)
            best_epoch = int(record.get("best_epoch", best_epoch))
        if (run_folder / FINISHED_MARKER).is_file():
            metrics = read_metrics(run_folder)
            selected = {}
            for split, m in metrics.items():
                for key in METRIC_KEYS:
                    if isinstance(m, dict) and isinstance(m.get(key), (int, float)):
                        selected[f"selected/{split}_{key}"] = float(m[key])
                        self.writer.add_scalar(f"selected/{split}_{key}", float(m[key]), best_epoch)
            self.add_hparams(run_folder, selected)
        self.writer.flush()

    def add_hparams(self, run_folder: Path, selected: dict[str, float]) -> None:
        """The HParams plugin's summary in this run's own events file (SummaryWriter.add_hparams would
        open a second run in a sub-folder): its settings, and the selected/* scalars as its metrics."""
        from torch.utils.tensorboard.summary import hparams

        config_path = run_folder / "config.json"
        if not config_path.is_file() or not selected:
            return
        config = json.loads(config_path.read_text())
        for summary in hparams(run_hparams(config), selected):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def run_events(folder: Path, enabled: bool):
    """The epoch hook writing `folder`/tensorboard while a run is built in `folder` (its tmp folder);
    None when not enabled. On success the remaining history and the selected scores are added."""
    if not enabled:
        yield None
        return
    log = TensorBoardLog(Path(folder) / TB_DIR)
    try:
        yield log
        log.finish(Path(folder))
    finally:
        log.close()


def history_events(run: str | Path) -> Path | None:
    """Events for a finished run made without --tensorboard, from its history.jsonl; None when it
    already has them. Written in a tmp folder and renamed, so tensorboard/ is complete or absent."""
    run = Path(run)
    target = run / TB_DIR
    if target.exists():
        return None
    with building_folder(target) as tmp:
        log = TensorBoardLog(tmp)
        try:
            log.finish(run)
        finally:
            log.close()
    return target
