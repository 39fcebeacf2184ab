"""The progress lines: why an epoch loop stopped (train/loop.py), compare's per-head ETA
(study/compare.GridProgress) and the leaderboard's note on the closed-form probe's std."""
import re

import pytest
import torch

from msa_cache.study.compare import Entry, GridProgress, leaderboard_markdown
from msa_cache.train.loop import EpochProgress, stop_reason, train_epochs
from msa_cache.train.rundir import RunResult


def test_stop_reason_words():
    assert stop_reason(11, 6, 30, has_dev=True) == "no improvement for 5 epoch(s); kept epoch 6"
    assert stop_reason(30, 28, 30, has_dev=True) == "reached --max-epochs 30; kept epoch 28"
    assert stop_reason(3, 3, 3, has_dev=False) == "reached --max-epochs 3; kept the last epoch (3; no labeled dev rows)"


@pytest.mark.parametrize("scores, max_epochs, last_line", [
    ([0.5, 0.6, 0.55, 0.58, 0.4], 10, "stopped: no improvement for 3 epoch(s); kept epoch 2"),
    ([0.5, 0.6, 0.7], 3, "stopped: reached --max-epochs 3; kept epoch 3"),
])
def test_train_epochs_tells_the_progress_why_it_stopped(scores, max_epochs, last_line):
    model = torch.nn.Linear(2, 2)
    lines = []
    it = iter(scores)
    history = train_epochs(model, max_epochs, 3, "weighted-f1", lambda epoch: {"train_loss": 1.0},
                           lambda: {"dev_weighted_f1": next(it)}, EpochProgress(max_epochs, "weighted-f1", lines.append))
    assert len(lines) == len(scores) + 1 and lines[-1] == last_line
    assert history[-1]["best_epoch"] == int(last_line.rsplit(" ", 1)[1])


def test_grid_eta_uses_each_heads_own_mean():
    progress = GridProgress(["late", "late", "mha", "mha", "mha", "probe"])
    _, eta = progress.step(10.0)  # one late timed: everything left at the overall mean 10 s
    assert eta == "ETA 0m50s"
    _, eta = progress.step(None)  # skipped: counts as done, not timed
    assert eta == "ETA 0m40s"
    step, eta = progress.step(100.0)  # mha 100 s: two mha left at 100, probe (untimed) at the overall 55
    assert step == "run 3/6" and eta == "ETA 4m15s"
    progress.step(110.0)
    progress.step(120.0)
    step, eta = progress.step(1.0)
    assert step == "run 6/6" and eta == ""


def test_probe_rows_say_their_std_is_zero_by_construction(tmp_path):
    metrics = {"dev": {"accuracy": 0.6, "macro_f1": 0.5, "weighted_f1": 0.55},
               "test": {"accuracy": 0.6, "macro_f1": 0.5, "weighted_f1": 0.55}}
    runs = [RunResult(tmp_path / f"seed-{s}", metrics, skipped=True) for s in range(3)]
    other = {k: {**v, "weighted_f1": 0.7} for k, v in metrics.items()}
    entries = [Entry("late", {}, [RunResult(tmp_path / f"l{s}", other, skipped=True) for s in range(3)]),
               Entry("probe", {}, runs), Entry("probe", {"C": 1.0}, runs[:1])]
    rows = {line.split(" | ")[0]: line for line in leaderboard_markdown(entries).splitlines() if line.startswith("| ")}
    assert re.search(r"std 0 by construction \(closed form", rows["| probe"])
    assert "by construction" not in rows["| late"] and "by construction" not in rows["| probe C=1.0"]
