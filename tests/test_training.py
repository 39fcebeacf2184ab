"""The shared epoch loop (msa_cache/train/loop.train_epochs): early stopping, best epoch restored, hooks, no-dev runs."""
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
    assert set(s) == {"dev_accuracy", "dev_macro_f1", "dev_weighted_f1", "dev_loss"}
    assert s["dev_accuracy"] == pytest.approx(2 / 3)
    assert s["dev_loss"] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)  # the cross-entropy


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


def test_one_metrics_table_scores_like_sklearn_and_names_every_spelling():
    from sklearn.metrics import accuracy_score, f1_score

    from msa_cache.metrics import METRIC_KEYS, METRICS, MONITOR_NAMES, classification_metrics, monitor_metric

    y, p = np.array([0, 1, 2, 2, 1, 0, 0]), np.array([0, 2, 2, 1, 1, 0, 1])
    expected = {"accuracy": accuracy_score(y, p), "macro-f1": f1_score(y, p, average="macro"),
                "weighted-f1": f1_score(y, p, average="weighted")}
    assert MONITOR_NAMES == tuple(expected) and METRIC_KEYS == ("accuracy", "macro_f1", "weighted_f1")
    scores = classification_metrics(y, p, ["a", "b", "c"])
    for m in METRICS:
        assert m.score(y, p) == pytest.approx(expected[m.name]) == pytest.approx(scores[m.key])
        assert m.dev_key == f"dev_{m.key}" and monitor_metric(m.name) is m
    assert set(dev_scores(y, np.eye(3)[p], ["a", "b", "c"])) == {m.dev_key for m in METRICS} | {"dev_loss"}
    with pytest.raises(ValueError, match="--monitor must be one of accuracy, macro-f1, weighted-f1"):
        monitor_metric("weighted_f1")  # the metrics.json key is not a monitor name


def test_run_mode_is_read_in_one_place():
    from msa_cache.train.identity import CACHED, FINETUNE, run_mode

    assert run_mode({}) == CACHED == "cached"  # cached runs record no mode (made before fine-tuning existed)
    assert run_mode({"mode": "finetune"}) == FINETUNE


def test_identity_exclusions_come_from_field_metadata_and_hashes_stay():
    """`"identity": False` in a field's metadata leaves it out of the run's identity; the default configs
    hash as they did before the exclusions moved into the metadata (so run folders keep their names)."""
    from msa_cache.finetune.config import FinetuneConfig
    from msa_cache.fit.config import TrainConfig
    from msa_cache.train.identity import config_hash

    assert "device" not in TrainConfig().identity() and "workers" not in TrainConfig().identity()
    assert not {"grad_checkpointing", "device", "workers"} & set(FinetuneConfig().identity())
    assert TrainConfig(device="cpu", workers=3).identity() == TrainConfig().identity()
    assert config_hash(TrainConfig().identity()) == "c3107064f8"
    assert config_hash(FinetuneConfig().identity()) == "460d078cca"


@pytest.mark.parametrize("cls,bad,message", [
    ("TrainConfig", {"batch_size": 0}, "--batch-size 0 is out of range; it must be >= 1"),
    ("TrainConfig", {"monitor": "loss"}, "--monitor must be one of accuracy, macro-f1, weighted-f1"),
    ("TrainConfig", {"lr": float("nan")}, "--lr must be a finite number"),
    ("FinetuneConfig", {"warmup": 1.0}, "--warmup 1.0 is out of range; it must be >= 0 and < 1"),
    ("FinetuneConfig", {"text_aug": "rot13"}, "--text-aug must be one of none, translation, synonyms"),
    ("FinetuneConfig", {"unfreeze_from": 0}, "--unfreeze-from 0 is out of range; it must be >= 1"),
    ("FinetuneConfig", {"unfreeze": ["text", "audio"]}, "--unfreeze audio: choose from text,image"),
])
def test_every_config_is_checked_by_its_field_metadata(cls, bad, message):
    """One rule (settings.check_settings) for the trainer's and the fine-tuner's options: one line naming the flag."""
    from msa_cache.finetune.config import FinetuneConfig
    from msa_cache.fit.config import TrainConfig

    with pytest.raises(ValueError) as e:
        {"TrainConfig": TrainConfig, "FinetuneConfig": FinetuneConfig}[cls](**bad)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_train_rows_refuse_nothing_to_learn_and_draw_one_subset_for_every_seed(tmp_path):
    from msa_cache.manifest import ManifestMeta, read_manifest, rows_to_table, write_manifest
    from msa_cache.train.loop import train_rows

    def manifest(labels):
        rows = [{"id": f"p{i}", "text": "t", "image": "i.jpg", "label": label, "split": "train"}
                for i, label in enumerate(labels)]
        meta = ManifestMeta(dataset="toy", classes=["a", "b"], root=str(tmp_path), builder="test")
        return write_manifest(rows_to_table(rows), meta, tmp_path / f"m{len(labels)}.parquet")

    with pytest.raises(ValueError, match="every labeled train row has the class 'a'"):
        train_rows(read_manifest(manifest([0, 0, 0])))
    two = read_manifest(manifest([0, 1] * 10))
    assert np.array_equal(train_rows(two, 6), train_rows(two, 6)) and len(train_rows(two)) == 20


def test_dev_metrics_are_classification_metrics_to_the_bit():
    """The epoch's dev pass (early stopping) scores with dev_metrics, metrics.json with classification_metrics."""
    from msa_cache.metrics import classification_metrics, dev_metrics

    rng = np.random.default_rng(0)
    for n, k in [(450, 3), (37, 3), (20, 5), (3, 3)]:
        for _ in range(20):
            y, p = rng.integers(0, k, n), rng.integers(0, k, n)
            p[: n // 3] = y[: n // 3]  # some signal
            if k > 3:
                y[y == k - 1] = 0  # a class absent from the labels
            full = classification_metrics(y, p, [f"c{i}" for i in range(k)])
            assert dev_metrics(y, p, k) == {m: full[m] for m in ("accuracy", "macro_f1", "weighted_f1")}
