"""The shared epoch loop (runs/training.train_epochs): early stopping, best epoch restored, hooks, no-dev runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from msa_cache.train.loop import class_weight_for, dev_scores, train_epochs


def _loop(scores, patience=2, hooks=None):
    model = torch.nn.Linear(1, 1, bias=False)
    seen = []

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weight remembers which epoch it came from
        return {"seconds": 0.0, "train_loss": 1.0 / epoch}

    def evaluate():
        if scores is None:
            return None
        s = scores[len(seen)]
        seen.append(s)
        return {"dev_accuracy": s, "dev_macro_f1": s, "dev_weighted_f1": s}

    history = train_epochs(model, 10, patience, "accuracy", train_epoch, evaluate, hooks)
    return model, history


def test_early_stopping_restores_the_best_epoch():
    model, history = _loop([0.5, 0.7, 0.6, 0.65, 0.9, 0.9])
    assert [h["epoch"] for h in history[:-1]] == [1, 2, 3, 4]  # 2 epochs without a better score after epoch 2
    assert history[-1] == {"best_epoch": 2, "best_dev_score": 0.7, "monitor": "accuracy"}
    assert float(model.weight.detach()) == 2.0
    assert history[0] == {"epoch": 1, "seconds": 0.0, "train_loss": 1.0, "dev_accuracy": 0.5, "dev_macro_f1": 0.5,
                          "dev_weighted_f1": 0.5}


def test_without_dev_rows_the_last_epoch_is_kept():
    model, history = _loop(None)
    assert len(history) == 11 and history[-1]["best_epoch"] == 10 and float(model.weight.detach()) == 10.0
    assert "dev_accuracy" not in history[0]


def test_hooks_see_every_epoch_may_add_fields_and_may_stop_the_run():
    calls = []

    def add(epoch, record):
        record["extra"] = epoch

    def watch(epoch, record):
        calls.append((epoch, record["extra"]))
        if epoch == 3:
            raise RuntimeError("prune")

    with pytest.raises(RuntimeError, match="prune"):
        _loop([0.1, 0.2, 0.3, 0.4], hooks=[add, watch])
    assert calls == [(1, 1), (2, 2), (3, 3)]
    _, history = _loop([0.5] * 10, patience=1, hooks=add)  # one hook may be passed bare
    assert history[0]["extra"] == 1


def test_class_weight_and_dev_scores():
    w = class_weight_for(np.array([0, 0, 0, 1]), 3, "balanced")
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 0.0]))
    assert class_weight_for(np.array([0, 1]), 2, "none") is None
    with pytest.raises(ValueError, match="class-weights"):
        class_weight_for(np.array([0, 1]), 2, "inverse")
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    s = dev_scores(np.array([0, 1, 1]), probs, ["a", "b"])
    assert set(s) == {"dev_accuracy", "dev_macro_f1", "dev_weighted_f1"} and s["dev_accuracy"] == pytest.approx(2 / 3)


def test_resolved_spec_is_a_filled_copy_and_the_given_spec_stays_as_given():
    from types import SimpleNamespace

    from msa_cache.heads import get_head
    from msa_cache.fit.config import RunSpec, TrainConfig

    spec = RunSpec("m.parquet", {}, "ae-cat", {"latent": 32}, TrainConfig(), 0)
    resolved = spec.resolved(SimpleNamespace(default_monitor="macro-f1"))
    assert spec.head_options == {"latent": 32} and spec.train.monitor is None
    assert resolved.train.monitor == "macro-f1"
    assert resolved.head_options["latent"] == 32 and set(resolved.head_options) == set(
        f for f in get_head("ae-cat").Config.__dataclass_fields__)
    assert resolved.head_config == get_head("ae-cat").Config(latent=32)
    given = RunSpec("m.parquet", {}, "ae-cat", {}, TrainConfig(monitor="accuracy"), 0)
    assert given.resolved(SimpleNamespace(default_monitor="macro-f1")).train.monitor == "accuracy"
    with pytest.raises(ValueError, match="no option"):
        RunSpec("m.parquet", {}, "ae-cat", {"levels": 3}, TrainConfig(), 0).resolved(SimpleNamespace(default_monitor="accuracy"))


def test_head_traits_are_class_attributes_with_defaults():
    from msa_cache.heads import HEADS, Head

    assert Head.uses_hidden_layers is False and Head.fit_mode == "gradient"
    assert HEADS["probe"].fit_mode == "closed_form" and HEADS["infig"].uses_hidden_layers is True
    assert all(cls.fit_mode in ("gradient", "closed_form") for cls in HEADS.values())


def test_trainer_flags_are_generated_from_trainconfig_fields():
    import dataclasses

    from msa_cache.fit.config import TrainConfig
    from msa_cache_cli.fit import fit_cmd

    params = {p.name: p for p in fit_cmd.params}
    for f in dataclasses.fields(TrainConfig):
        assert params[f.name].default == f.default, f.name
        assert params[f.name].opts[0] == "--" + f.name.replace("_", "-")
    assert params["batch_size"].type.min == 1 and params["patience"].type.min == 0
    assert list(params["monitor"].type.choices) == ["accuracy", "macro-f1", "weighted-f1"]
    assert params["lr"].type.min_open and params["oversample"].secondary_opts == ["--no-oversample"]


def test_finetune_flags_are_generated_from_finetuneconfig_fields():
    import dataclasses

    from msa_cache.finetune import FinetuneConfig
    from msa_cache_cli.finetune import finetune_cmd

    params = {p.name: p for p in finetune_cmd.params}
    for f in dataclasses.fields(FinetuneConfig):
        if f.name != "unfreeze":  # a list field: its flag takes text,image|none (callback)
            assert params[f.name].default == f.default, f.name
    assert params["warmup"].type.max_open and params["unfreeze_from"].type.min == 1
    assert list(params["clean"].type.choices) == sorted(params["clean"].type.choices)


def test_dev_metrics_are_classification_metrics_to_the_bit():
    """The epoch's dev pass (early stopping) scores with dev_metrics, metrics.json with classification_metrics."""
    from msa_cache.train.metrics import classification_metrics, dev_metrics

    rng = np.random.default_rng(0)
    for n, k in [(450, 3), (37, 3), (20, 5), (3, 3)]:
        for _ in range(20):
            y, p = rng.integers(0, k, n), rng.integers(0, k, n)
            p[: n // 3] = y[: n // 3]  # some signal
            if k > 3:
                y[y == k - 1] = 0  # a class absent from the labels
            full = classification_metrics(y, p, [f"c{i}" for i in range(k)])
            assert dev_metrics(y, p, k) == {m: full[m] for m in ("accuracy", "macro_f1", "weighted_f1")}
