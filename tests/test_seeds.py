"""Seeds trained together (msa_cache/fit/seeds.py) are the runs each seed makes alone: same run
directories and identities, same files, metrics, predictions and histories (up to float rounding),
with each seed's own early stopping; heads that cannot be stacked train one at a time and say so."""
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.seeds import CPU_STACK_MAX_PARAMS, batch_refusal, class_refusal, cost_refusal, fit_seeds, has_torch_func
from msa_cache.heads import Batch, Head, HeadOutput, ModalitySpec, get_head
from msa_cache_cli.main import main as cli
from pooled_world import make_world

pytestmark = pytest.mark.skipif(not has_torch_func(), reason="torch < 2.0: seeds always train one at a time")
SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("seeds"))


def _specs(world, head, options=None, **train):
    manifest, cache_root = world
    caches = {"text": str(cache_root / "toy" / "toytext"), "image": str(cache_root / "toy" / "toyimage")}
    tc = TrainConfig(**{"max_epochs": 8, "patience": 2, "batch_size": 16, **train})
    return [RunSpec(str(manifest), caches, head, dict(options or {}), tc, seed) for seed in SEEDS]


def _numbers(tree, path=""):
    """Every number of a JSON tree, by its path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{path}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{path}[{i}]").items()}
    return {path: tree}


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def _assert_same_run(alone: Path, together: Path, root_alone: Path, root_together: Path):
    assert alone.relative_to(root_alone) == together.relative_to(root_together)  # the same identity and folder
    assert sorted(p.name for p in alone.iterdir()) == sorted(p.name for p in together.iterdir())
    a, b = (json.loads((p / "config.json").read_text()) for p in (alone, together))
    assert a.pop("runs") == str(root_alone) and b.pop("runs") == str(root_together)
    assert a == b
    ma, mb = (_numbers(json.loads((p / "metrics.json").read_text())) for p in (alone, together))
    assert ma.keys() == mb.keys()
    for k in ma:
        assert ma[k] == pytest.approx(mb[k], abs=1e-9), k
    pa, pb = (pq.read_table(p / "predictions.parquet").to_pydict() for p in (alone, together))
    assert pa["id"] == pb["id"] and pa["pred"] == pb["pred"]
    for col in (c for c in pa if c.startswith("prob_")):
        np.testing.assert_allclose(pa[col], pb[col], rtol=0, atol=1e-5)
    ha, hb = _history(alone), _history(together)
    assert len(ha) == len(hb) and ha[-1] == hb[-1]  # the same epochs, the same best epoch and score
    for ra, rb in zip(ha[:-1], hb[:-1]):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k != "seconds":
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("head,options,train", [
    ("late", {}, {}),
    ("ae-cat", {"latent": 16, "dropout": 0.3}, {"oversample": True, "class_weights": "balanced"}),
    ("uni-text", {}, {"optimizer": "adam", "weight_decay": 0.01}),
])
def test_seeds_together_are_the_runs_of_seeds_alone(world, tmp_path, head, options, train):
    specs = _specs(world, head, options, **train)
    alone = fit_seeds(specs, tmp_path / "alone", batch=False)
    lines = []
    together = fit_seeds(specs, tmp_path / "together", log=lines.append)
    assert lines == []  # stacked: nothing to report
    assert [r.skipped for r in together] == [False] * len(SEEDS)
    for a, b in zip(alone, together):
        _assert_same_run(a.path, b.path, tmp_path / "alone", tmp_path / "together")
    # each seed stopped on its own: the seeds ran different numbers of epochs (one left the stack early)
    assert len({len(_history(r.path)) for r in together}) > 1
    # finished runs are read back, not trained again
    again = fit_seeds(specs, tmp_path / "together")
    assert all(r.skipped for r in again) and [r.metrics for r in again] == [r.metrics for r in together]


def test_a_finished_seed_is_read_back_and_the_others_stacked(world, tmp_path):
    specs = _specs(world, "late")
    first = fit_seeds(specs[:1], tmp_path)
    rest = fit_seeds(specs, tmp_path, batch=True)  # stacked wherever the head can be (here: as auto)
    assert [r.skipped for r in rest] == [True, False, False, False] and rest[0].path == first[0].path
    alone = fit_seeds(specs, tmp_path / "alone", batch=False)
    for a, b in zip(alone[1:], rest[1:]):
        _assert_same_run(a.path, b.path, tmp_path / "alone", tmp_path)


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_over_stacked_parameters_steps_each_seed_as_its_own(kind):
    """Adam/AdamW work element by element: one optimizer over [S, ...] tensors = S optimizers."""
    make = (lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.01)) if kind == "adam" else \
        (lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01))
    g = torch.Generator().manual_seed(0)
    seeds = [[torch.randn(5, 3, generator=g, requires_grad=True), torch.randn(3, generator=g, requires_grad=True)]
             for _ in range(4)]
    stacked = [torch.stack([s[i].detach() for s in seeds]).requires_grad_(True) for i in range(2)]
    alone = [make(s) for s in seeds]
    together = make(stacked)
    for _ in range(5):
        grads = [[torch.randn(p.shape, generator=g) for p in s] for s in seeds]
        for s, opt, gs in zip(seeds, alone, grads):
            for p, gr in zip(s, gs):
                p.grad = gr.clone()
            opt.step()
        for i, p in enumerate(stacked):
            p.grad = torch.stack([gs[i] for gs in grads])
        together.step()
    for k, s in enumerate(seeds):
        for i, p in enumerate(s):
            torch.testing.assert_close(stacked[i][k], p, rtol=0, atol=0)


def test_heads_that_cannot_stack_train_one_at_a_time_and_say_so(world, tmp_path):
    lines = []
    results = fit_seeds(_specs(world, "probe")[:2], tmp_path, log=lines.append)
    assert [r.skipped for r in results] == [False, False]
    assert lines == ["probe: training its 2 seeds one at a time: it is fitted in closed form"]
    for name in ("mha", "ab-cat", "mdse", "infig"):  # token heads (INFIG: also its queue and EMA)
        assert "token features" in class_refusal(get_head(name))
    for name in ("late", "ae-cat", "ae-add", "uni-text", "uni-image"):
        assert class_refusal(get_head(name)) is None


class _WithBatchNorm(Head):
    """A head with running statistics in buffers: its seeds cannot share one stacked forward."""

    def __init__(self, spec, num_classes, cfg=None):
        super().__init__(spec, num_classes, cfg)
        self.net = nn.Sequential(nn.BatchNorm1d(spec["text"].pooled_dim), nn.Linear(spec["text"].pooled_dim, num_classes))

    def forward(self, batch: Batch) -> HeadOutput:
        return HeadOutput(self.net(batch.inputs["text"].pooled))


class _WithAlphaDropout(_WithBatchNorm):
    def __init__(self, spec, num_classes, cfg=None):
        super().__init__(spec, num_classes, cfg)
        self.net = nn.Sequential(nn.AlphaDropout(0.1), nn.Linear(spec["text"].pooled_dim, num_classes))


def test_buffers_other_dropouts_and_amp_refuse_stacking(world):
    spec = _specs(world, "late")[0]
    dims = {"text": ModalitySpec(4)}
    assert batch_refusal(_WithBatchNorm(dims, 3), spec, torch.device("cpu")) == "it keeps state in buffers"
    assert "AlphaDropout" in batch_refusal(_WithAlphaDropout(dims, 3), spec, torch.device("cpu"))
    late = get_head("late").model_class()(dims, 3, get_head("late").Config())
    assert batch_refusal(late, spec, torch.device("cpu")) is None
    assert "mixed precision" in batch_refusal(late, spec, torch.device("cuda"))


def _run(args):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return r.output


def test_cli_fit_several_seeds_and_no_batch_seeds_in_a_config_file(world, tmp_path):
    manifest, cache_root = world
    common = ["fit", "--manifest", str(manifest), "--cache-root", str(cache_root), "--head", "late",
              "--max-epochs", "2", "--seed", "0", "--seed", "1"]
    together = _run([*common, "--runs", str(tmp_path / "a")])
    assert "seed 0: epoch 1/2" in together and "seed 1: epoch 2/2" in together  # one progress line per seed
    config = tmp_path / "one-at-a-time.yaml"
    config.write_text("batch_seeds: false\n")
    alone = _run([*common, "--runs", str(tmp_path / "b"), "--config", str(config)])
    assert "seed 0: epoch" not in alone and "epoch 1/2" in alone
    runs = {root: sorted(p.parent.relative_to(root) for p in root.rglob("metrics.json"))
            for root in (tmp_path / "a", tmp_path / "b")}
    assert runs[tmp_path / "a"] == runs[tmp_path / "b"] and len(runs[tmp_path / "a"]) == 2
    for rel in runs[tmp_path / "a"]:
        _assert_same_run(tmp_path / "b" / rel, tmp_path / "a" / rel, tmp_path / "b", tmp_path / "a")


def test_compare_batches_seeds_unless_told_not_to(world, tmp_path):
    manifest, cache_root = world
    common = ["compare", "--manifest", str(manifest), "--cache-root", str(cache_root), "--heads", "ae-add,probe",
              "--seeds", "2", "--max-epochs", "3", "--resamples", "100"]
    out = _run([*common, "--runs", str(tmp_path / "a")])
    assert out.count("one at a time") == 1 and "probe: training its 2 seeds one at a time" in out
    out_b = _run([*common, "--runs", str(tmp_path / "b"), "--no-batch-seeds"])
    assert "one at a time" not in out_b
    lb = [(tmp_path / r / "toy" / "leaderboard.csv").read_text().splitlines() for r in ("a", "b")]
    assert lb[0][0] == lb[1][0] and len(lb[0]) == len(lb[1])
    for row_a, row_b in zip(lb[0][1:], lb[1][1:]):
        for x, y in zip(row_a.split(","), row_b.split(",")):
            try:
                assert math.isclose(float(x), float(y), abs_tol=1e-4)
            except ValueError:
                assert x == y


def test_auto_mode_stacks_where_it_pays():
    """On a CPU only small heads are faster stacked; MVSA-sized pooled features make a late head too big."""
    cls = get_head("late").model_class()
    small = cls({"text": ModalitySpec(12), "image": ModalitySpec(10)}, 3, cls.Config())
    big = cls({"text": ModalitySpec(384), "image": ModalitySpec(1280)}, 3, cls.Config())
    assert cost_refusal(small, torch.device("cpu")) is None
    reason = cost_refusal(big, torch.device("cpu"))
    assert reason.startswith("428,") and f"{CPU_STACK_MAX_PARAMS:,}" in reason and "--batch-seeds" in reason
    assert cost_refusal(big, torch.device("cuda")) is None
