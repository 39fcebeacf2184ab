"""`--tensorboard`: fit, finetune and tune trials write their epochs as TensorBoard events in the run
dir (readable with tensorboard's own EventAccumulator, the same tags for every run, one step per epoch);
the flag is not part of the run identity; a finished run gets its events from history.jsonl; a missing
tensorboard package is a one-line error before any work."""
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run  # noqa: E402
from msa_cache.fit.config import RunSpec, TrainConfig  # noqa: E402
from msa_cache.fit.trainer import fit_run  # noqa: E402
from msa_cache_cli.main import main as cli  # noqa: E402
from pooled_world import make_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("tb"))


def _spec(world, head="ae-cat", **train):
    manifest, cache_root = world
    caches = {"text": str(cache_root / "toy/toytext"), "image": str(cache_root / "toy/toyimage")}
    return RunSpec(str(manifest), caches, head, {"latent": 8} if head == "ae-cat" else {},
                   TrainConfig(max_epochs=train.pop("max_epochs", 4), patience=20, **train), 0)


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert files, f"no event file in {run / 'tensorboard'}"
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _epochs(run: Path) -> list[dict]:
    return [h for h in map(json.loads, (run / "history.jsonl").read_text().splitlines()) if "epoch" in h]


def test_fit_writes_events_and_the_flag_is_not_in_the_identity(world, tmp_path):
    with_tb = fit_run(_spec(world), tmp_path / "a", log=lambda m: None, tensorboard=True)
    without = fit_run(_spec(world), tmp_path / "b", log=lambda m: None)
    assert with_tb.path.relative_to(tmp_path / "a") == without.path.relative_to(tmp_path / "b")
    assert not (without.path / "tensorboard").exists()
    metrics = json.loads((with_tb.path / "metrics.json").read_text())
    assert metrics == json.loads((without.path / "metrics.json").read_text())  # the flag changes no result

    scalars = _scalars(with_tb.path)
    epochs = _epochs(with_tb.path)
    assert len(epochs) == 4
    for tag in ("loss/train", "loss_terms/ce", "dev/accuracy", "dev/macro_f1", "dev/weighted_f1",
                "time/epoch_seconds"):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3, 4], tag
    assert [v for _, v in scalars["dev/weighted_f1"]] == pytest.approx([h["dev_weighted_f1"] for h in epochs], abs=1e-6)
    assert [v for _, v in scalars["loss/train"]] == pytest.approx([h["train_loss"] for h in epochs], rel=1e-6)
    (step, value), = scalars["selected/dev_weighted_f1"]
    assert value == pytest.approx(metrics["dev"]["weighted_f1"], abs=1e-6)
    best = json.loads((with_tb.path / "history.jsonl").read_text().splitlines()[-1])["best_epoch"]
    assert step == best
    assert not list(with_tb.path.parent.glob("*.tmp-*"))

    # The finished run made without the flag: --tensorboard skips it and writes its events from history.jsonl.
    again = fit_run(_spec(world), tmp_path / "b", log=lambda m: None, tensorboard=True)
    assert again.skipped and again.path == without.path
    backfilled = _scalars(without.path)
    assert set(backfilled) == set(scalars)
    for tag in ("loss/train", "dev/weighted_f1", "selected/dev_weighted_f1"):
        assert [s for s, _ in backfilled[tag]] == [s for s, _ in scalars[tag]]
    assert [v for _, v in backfilled["dev/weighted_f1"]] == pytest.approx([v for _, v in scalars["dev/weighted_f1"]])
    files = sorted((without.path / "tensorboard").iterdir())
    fit_run(_spec(world), tmp_path / "b", log=lambda m: None, tensorboard=True)  # once: nothing rewritten
    assert sorted((without.path / "tensorboard").iterdir()) == files


def test_probe_and_cli(world, tmp_path):
    """The closed-form probe (no epoch loop) still shows its selected scores; the CLI flag works."""
    manifest, cache_root = world
    r = CliRunner().invoke(cli, ["fit", "--head", "probe", "--manifest", str(manifest), "--cache-root", str(cache_root),
                                 "--runs", str(tmp_path), "--tensorboard"])
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "toy").glob("probe-*/seed-0"))
    scalars = _scalars(run)
    assert {"selected/dev_accuracy", "selected/dev_weighted_f1", "other/C"} <= set(scalars)


def test_missing_tensorboard_is_one_line_before_any_work(world, tmp_path, monkeypatch):
    manifest, cache_root = world
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    for args in (["fit", "--head", "ae-cat", "--manifest", str(manifest), "--cache-root", str(cache_root)],
                 ["finetune", "--head", "late", "--encoder", "minilm", "--encoder", "efficientnet-lite0"],
                 ["tune", "--head", "ae-cat", "--trials", "2"]):
        r = CliRunner().invoke(cli, [*args, "--runs", str(tmp_path), "--tensorboard"])
        assert r.exit_code == 2, r.output
        assert r.output == ("error: --tensorboard needs the tensorboard package, which is not installed: "
                            "pip install 'msa-cache[tb]'\n")
    assert not any(tmp_path.iterdir())


def test_tune_trials_write_events(world, tmp_path):
    pytest.importorskip("optuna")
    from msa_cache.study.tune import tune

    manifest, cache_root = world
    caches = {"text": cache_root / "toy/toytext", "image": cache_root / "toy/toyimage"}
    result = tune(manifest, caches, "ae-cat", 2, {}, TrainConfig(max_epochs=3), tmp_path, seeds=1, sampler_seed=0,
                  log=lambda m: None, tensorboard=True)
    runs = [p.parent for p in (tmp_path / "toy").rglob("metrics.json")]
    assert len(runs) >= 2 and result.best_run in runs
    for run in runs:
        scalars = _scalars(run)
        assert [s for s, _ in scalars["dev/weighted_f1"]] == [h["epoch"] for h in _epochs(run)]


def test_finetune_writes_events(tmp_path, tokenizer):
    from test_finetune import make_world as finetune_world

    root, manifest, bert, vit = finetune_world(tmp_path, tokenizer)
    spec = FinetuneSpec(str(manifest), "late", [str(bert), str(vit)], None, {},
                        FinetuneConfig(max_epochs=2, head_epochs=1, batch_size=8, max_length=12))
    run = finetune_run(spec, tmp_path / "runs", log=lambda m: None, tensorboard=True).path
    scalars = _scalars(run)
    for tag in ("loss/train", "dev/weighted_f1", "lr/head", "lr/encoder", "time/dev_seconds", "memory/peak_rss_mb"):
        assert [s for s, _ in scalars[tag]] == [1, 2], tag
    plain = finetune_run(spec, tmp_path / "runs", log=lambda m: None)  # same identity: read back, skipped
    assert plain.skipped and plain.path == run


def _hparams(run: Path) -> tuple[dict, list[str]]:
    """The run's HParams plugin summary as the dashboard reads it: its settings and its metric tags."""
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    values = {k: v.string_value or v.number_value or v.bool_value for k, v in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]


def test_dev_loss_lr_and_hparams(world, tmp_path):
    run = fit_run(_spec(world, max_epochs=3, lr=0.002), tmp_path, log=lambda m: None, tensorboard=True)
    epochs = _epochs(run.path)
    scalars = _scalars(run.path)
    # dev_loss: the mean cross-entropy of the dev probabilities, one per epoch, positive and finite
    assert all(0 < h["dev_loss"] < 20 for h in epochs)
    assert [v for _, v in scalars["dev/loss"]] == pytest.approx([h["dev_loss"] for h in epochs], rel=1e-6)
    assert [(s, v) for s, v in scalars["lr/head"]] == [(1, pytest.approx(0.002)), (2, pytest.approx(0.002)),
                                                        (3, pytest.approx(0.002))]
    values, metric_tags = _hparams(run.path)
    config = json.loads((run.path / "config.json").read_text())
    assert values["head"] == "ae-cat" and values["train.lr"] == pytest.approx(0.002)
    assert values["train.max_epochs"] == 3 and values["optimizer.optimizer"] == config["optimizer"]["optimizer"]
    assert "selected/dev_weighted_f1" in metric_tags and "selected/test_accuracy" in metric_tags
    assert all(tag in scalars for tag in metric_tags)  # the dashboard's metric columns are logged scalars


def test_dev_loss_is_the_cross_entropy():
    import numpy as np

    from msa_cache.train.loop import dev_scores
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]], dtype=np.float32)
    labels = np.array([0, 1, 0])
    loss = dev_scores(labels, probs, ["a", "b", "c"])["dev_loss"]
    assert loss == pytest.approx(-(np.log(0.5) + np.log(0.8) + np.log(1e-12)) / 3)
