"""The fit stage end to end on caches with a known signal: every head learns it,
run directories hold what they promise, finished runs are skipped, unlabeled
rows are predicted, compare/oracle/CLI work."""
import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from msa_cache.cache.reader import open_cache
from msa_cache.heads import HEADS
from msa_cache.manifest import read_manifest
from msa_cache.study.compare import compare, expand_grid, finished_entries, write_leaderboard
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.study.oracle import oracle
from msa_cache.errors import UserError
from msa_cache.finished_run import load_run
from msa_cache.fit.trainer import fit_run, predict_probs
from msa_cache.fit.features import open_features
from msa_cache_cli.main import main as cli
from worlds import CLASSES, TokenWorld, extract_toy, split_column, write_toy_manifest

N, L, P, DT, DI = 400, 8, 4, 16, 12
N_TRAIN, N_DEV = 280, 60  # the other 60 rows: an unlabeled test split
# Each row's class sits in the text, the image or both (drawn per row), at a random token / patch.
WORLD = TokenWorld(N, L, P, DT, DI, strength=4.0, carriers="random", random_positions=True, cls_scale=2.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A manifest (test split unlabeled) and a text + an image cache written by the real pipeline."""
    root = tmp_path_factory.mktemp("runs")
    manifest = write_toy_manifest(root, WORLD.labels(), split_column(N, N_TRAIN, N_DEV), labeled_test=False)
    return root, manifest, extract_toy(manifest, root, WORLD.encoders())


def _spec(world, head, options=None, seed=0, **train):
    root, manifest, caches = world
    tc = TrainConfig(max_epochs=train.pop("max_epochs", 25), patience=train.pop("patience", 8), **train)
    return RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, head, options or {}, tc, seed)


SMALL = {"mdse": {"width": 32, "num_heads": 4}, "infig": {"width": 32, "num_heads": 4, "embed": 16, "queue_size": 64},
         "mha": {"width": 32}, "ab-cat": {"latent": 32}, "ab-add": {"latent": 32}}


def test_features_match_cache(world):
    root, manifest, caches = world
    fs = open_features(read_manifest(manifest), caches)
    rows = np.array([5, 199, 3])
    b = fs.batch(rows, np.zeros(N, dtype=np.int64), {}, with_tokens=True)
    expect = WORLD.text_rows(rows)
    longest = int(expect["text/mask"].sum(1).max())
    # positions that are padding in every row of the batch are trimmed; nothing real is lost
    assert b.inputs["text"].tokens.shape[1] == longest
    assert torch.allclose(b.inputs["text"].tokens, torch.from_numpy(expect["text/tokens"][:, :longest]), atol=1e-2)
    assert b.inputs["text"].mask.dtype == torch.bool
    assert b.inputs["text"].mask.sum(1).tolist() == expect["text/mask"].sum(1).tolist()
    assert b.ids == ["p5", "p199", "p3"]
    assert fs.spec()["image"].token_dim == DI and fs.spec()["text"].num_tokens == L


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_learns_the_toy_problem(world, tmp_path, head):
    """Uni-modal heads see only 2/3 of the signal; fusion heads should see all of it."""
    torch.manual_seed(0)
    r = fit_run(_spec(world, head, SMALL.get(head)), tmp_path, log=lambda m: None)
    dev = r.metrics["dev"]["accuracy"]
    floor = 0.5 if head.startswith("uni") else 0.7  # chance is 1/3
    print(f"{head}: dev accuracy {dev:.3f}")
    assert dev > floor, f"{head}: dev accuracy {dev:.3f}"
    assert "test" not in r.metrics  # the test split is unlabeled


def test_run_directory_contents_and_skip(world, tmp_path):
    spec = _spec(world, "ae-cat", {"latent": 16})
    r = fit_run(spec, tmp_path, log=lambda m: None)
    names = sorted(p.name for p in r.path.iterdir())
    assert names == ["README.md", "command.yaml", "config.json", "confusion.png", "history.jsonl", "metrics.json",
                     "model.safetensors", "predictions.parquet"]
    cfg = json.loads((r.path / "config.json").read_text())
    assert cfg["spec"]["seed"] == 0 and cfg["spec"]["head_options"]["latent"] == 16
    assert "torch" in cfg["versions"] and cfg["manifest_fingerprint"]
    history = [json.loads(line) for line in (r.path / "history.jsonl").read_text().splitlines()]
    epochs = [h for h in history if "epoch" in h]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert {"train_ce", "train_rec_text", "train_rec_image", "dev_weighted_f1"} <= set(epochs[0])
    # every row predicted, unlabeled test rows included
    pred = pq.read_table(r.path / "predictions.parquet").to_pydict()
    assert len(pred["id"]) == N and pred["split"].count("test") == N - N_TRAIN - N_DEV
    assert all(label is None for label, s in zip(pred["label"], pred["split"]) if s == "test")
    probs = np.stack([pred[f"prob_{c}"] for c in CLASSES], 1)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == np.array(pred["pred"])).all()
    # model.safetensors loads and reproduces the predictions
    head, _ = load_run(r.path)
    fs = open_features(read_manifest(world[1]), world[2])
    again = predict_probs(head, fs, np.arange(N), torch.device("cpu"))
    assert np.allclose(again, probs, atol=1e-5)
    # the same spec again: found and skipped, not retrained
    mtime = (r.path / "model.safetensors").stat().st_mtime_ns
    again = fit_run(_spec(world, "ae-cat", {"latent": 16}), tmp_path, log=lambda m: None)
    assert again.skipped and again.path == r.path and (r.path / "model.safetensors").stat().st_mtime_ns == mtime
    assert not list(r.path.parent.glob("*.tmp-*"))

    # an older run's model.pt (a torch pickle of plain tensors) still loads, with the same predictions
    from safetensors.torch import load_file

    old = tmp_path / "old" / "seed-0"
    shutil.copytree(r.path, old)
    torch.save(load_file(old / "model.safetensors"), old / "model.pt")
    (old / "model.safetensors").unlink()
    head, _ = load_run(old)
    assert np.allclose(predict_probs(head, fs, np.arange(N), torch.device("cpu")), probs, atol=1e-5)
    # a corrupt model.safetensors: one-line UserError naming the file, nothing loaded
    (old / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(UserError, match="model.safetensors is not a readable safetensors file") as e:
        load_run(old)
    assert "\n" not in str(e.value)


def test_history_grows_in_the_tmp_folder_per_epoch(world, tmp_path):
    seen = []

    def watch(epoch, record):  # runs before the epoch is appended: a watcher sees the epochs before it
        tmp = next(tmp_path.glob("toy/*/seed-0.tmp-*"))
        seen.append((tmp / "history.jsonl").read_text() if (tmp / "history.jsonl").exists() else "")

    r = fit_run(_spec(world, "ae-cat", {"latent": 8}, max_epochs=3, patience=10), tmp_path, log=lambda m: None,
                on_epoch_end=watch)
    assert [len(s.splitlines()) for s in seen] == [0, 1, 2]
    final = (r.path / "history.jsonl").read_text().splitlines()
    assert len(final) == 4 and final[:2] == seen[-1].splitlines()  # 3 epochs, then the best-epoch record
    assert [json.loads(line).get("epoch") for line in final] == [1, 2, 3, None]
    assert json.loads(final[-1])["best_epoch"] in (1, 2, 3)


def test_a_batch_bar_on_a_terminal_only(world, tmp_path, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        fit_run(_spec(world, "uni-text", max_epochs=2, batch_size=32), tmp_path / str(shown), log=lambda m: None)
        # 280 train rows in batches of 32: 9 per epoch, counted by the bar of each epoch
        assert bool(re.search(r"epoch 2/2: .*\d/9 \[", stream.getvalue())) == shown, stream.getvalue()
        assert shown or stream.getvalue() == ""  # logs and captured output stay clean


def test_same_seed_same_result_other_seed_other_dir(world, tmp_path):
    a = fit_run(_spec(world, "mha", SMALL["mha"], max_epochs=3), tmp_path / "a", log=lambda m: None)
    b = fit_run(_spec(world, "mha", SMALL["mha"], max_epochs=3), tmp_path / "b", log=lambda m: None)
    c = fit_run(_spec(world, "mha", SMALL["mha"], seed=1, max_epochs=3), tmp_path / "a", log=lambda m: None)
    pa = pq.read_table(a.path / "predictions.parquet").to_pydict()
    pb = pq.read_table(b.path / "predictions.parquet").to_pydict()
    assert pa == pb
    assert c.path.parent == a.path.parent and c.path.name == "seed-1"


def test_class_weights_and_oversampling_run(world, tmp_path):
    r = fit_run(_spec(world, "uni-image", class_weights="balanced", oversample=True, max_epochs=3), tmp_path,
                log=lambda m: None)
    assert json.loads((r.path / "config.json").read_text())["spec"]["train"]["oversample"] is True


def test_compare_grid_leaderboard_and_oracle(world, tmp_path):
    root, manifest, caches = world
    assert expand_grid(["uni-text", "ae-cat"], {"latent": [8, 16]}) == [
        ("uni-text", {}), ("ae-cat", {"latent": 8}), ("ae-cat", {"latent": 16})]
    # options sorted by name, the last varying fastest (sklearn's ParameterGrid; the order itertools gave before)
    assert expand_grid(["ae-cat"], {"latent": [8, 16], "lambda_ce": [1.0, 0.5]}) == [
        ("ae-cat", {"lambda_ce": 1.0, "latent": 8}), ("ae-cat", {"lambda_ce": 1.0, "latent": 16}),
        ("ae-cat", {"lambda_ce": 0.5, "latent": 8}), ("ae-cat", {"lambda_ce": 0.5, "latent": 16})]
    with pytest.raises(ValueError, match="belong to none"):
        expand_grid(["uni-text"], {"latent": [8]})
    tc = TrainConfig(max_epochs=6)
    entries = compare(manifest, caches, ["uni-text", "uni-image", "ae-cat"], {"latent": [8, 16]}, [0, 1], tc,
                      tmp_path, log=lambda m: None)
    assert [len(e.results) for e in entries] == [2, 2, 2, 2]
    mean, std = entries[0].stat("dev", "weighted_f1")
    assert 0 <= std < 0.5 and mean == max(e.stat("dev", "weighted_f1")[0] for e in entries)
    paths = write_leaderboard(entries, tmp_path / "lb")
    md = paths[0].read_text()
    assert "ae-cat latent=16" in md and "±" in md and paths[2].stat().st_size > 1000
    # a prefix with a dot keeps it; a file name given as the prefix loses its extension
    dotted = write_leaderboard(entries, tmp_path / "lb-md0.3")
    assert [p.name for p in dotted] == ["lb-md0.3.md", "lb-md0.3.csv", "lb-md0.3.png"]
    assert [p.name for p in write_leaderboard(entries, tmp_path / "named.md")] == ["named.md", "named.csv", "named.png"]
    # a second compare finds every run finished
    again = compare(manifest, caches, ["uni-text"], {}, [0, 1], tc, tmp_path, log=lambda m: None)
    assert all(r.skipped for r in again[0].results)

    text_run = next(e for e in entries if e.head == "uni-text").results[0].path
    image_run = next(e for e in entries if e.head == "uni-image").results[0].path
    multi_run = entries[0].results[0].path
    o = oracle(text_run, image_run, multi_run)
    assert o["rows"] == N_DEV
    assert o["oracle_accuracy"] >= max(o["text_accuracy"], o["image_accuracy"])
    assert o["both_right"] + o["only_text_right"] + o["only_image_right"] + o["neither_right"] == N_DEV


@pytest.mark.parametrize("monitor,scores", [("macro-f1", r"acc \d\.\d{4} mF1 \d\.\d{4}  "),
                                             ("accuracy", r"acc \d\.\d{4}  ")])
def test_compare_logs_the_monitors_score(world, tmp_path, monitor, scores):
    """Each run's line shows accuracy and the score the grid is ranked on (not always weighted-F1), the
    same for a run trained now and one read back; with cv, its out-of-fold scores."""
    root, manifest, caches = world
    lines = []
    tc = TrainConfig(max_epochs=1, monitor=monitor)
    for _ in range(2):
        compare(manifest, caches, ["uni-text"], {}, [0], tc, tmp_path, log=lines.append)
    compare(manifest, caches, ["uni-text"], {}, [0], tc, tmp_path, log=lines.append, cv=2)
    runs = [line for line in lines if re.search(r"uni-text +seed 0: (dev|out-of-fold) ", line)]
    assert len(runs) == 3 and "wF1" not in "".join(runs)
    assert all(re.search(f"seed 0: dev {scores}\\[", line) for line in runs[:2])
    assert re.search(f"seed 0: out-of-fold {scores}", runs[2])


def test_fit_family_is_a_run_or_its_folds(world, tmp_path):
    from msa_cache.fit.cv import CVResult, fit_family

    root, manifest, caches = world
    spec = RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, "uni-text", {}, TrainConfig(max_epochs=1), 0)
    run = fit_family(spec, 0, False, tmp_path, log=lambda m: None)
    assert run.path.name == "seed-0" and not run.skipped and run.metrics["dev"]["n"] == N_DEV
    folds = fit_family(spec, 2, True, tmp_path, log=lambda m: None)
    assert isinstance(folds, CVResult) and [f.path.name for f in folds.folds] == ["fold-0", "fold-1"]
    assert folds.refit is not None and folds.seconds >= folds.folds[0].seconds
    assert folds.metrics["dev"]["n"] == N_TRAIN + N_DEV  # every pooled row scored out of fold
    with pytest.raises(ValueError, match="--cv K"):
        fit_family(spec, 0, True, tmp_path, log=lambda m: None)


def test_cli_fit_compare_and_bad_option(world, tmp_path):
    root, manifest, caches = world
    common = ["--manifest", str(manifest), "--cache-root", str(root / "cache"), "--runs", str(tmp_path)]
    r = CliRunner().invoke(cli, ["fit", "--head", "ae-add", "--latent", "8", "--max-epochs", "2",
                                 "--seed", "0", "--seed", "1", *common])
    assert r.exit_code == 0, r.output
    assert r.output.count("weighted-F1") == 4  # train + dev for two seeds
    # one progress line per seed and epoch: train loss, dev monitor, seconds, best so far, ETA (the seeds
    # trained together, msa_cache/fit/seeds.py: each line names its seed)
    lines = [line for line in r.output.splitlines() if re.match(r"seed [01]: epoch ", line)]
    assert len(lines) == 4 and lines[0].startswith("seed 0: epoch 1/2, train loss ")
    lines = [line.removeprefix("seed 0: ") for line in lines if line.startswith("seed 0: ")]
    assert lines[1].startswith("epoch 2/2")
    assert re.fullmatch(r"epoch 2/2, train loss \d\.\d{4}, dev_weighted_f1 \d\.\d{4} \(best \d\.\d{4} @ epoch [12]\), "
                        r"\d+\.\ds, ETA 0m00s \(0 epoch\(s\) left at most\)", lines[1]), lines[1]
    # the end of training says why it stopped and the epoch it kept, per seed
    stops = [line for line in r.output.splitlines() if re.match(r"seed [01]: stopped: ", line)]
    assert len(stops) == 2 and re.fullmatch(r"seed 0: stopped: reached --max-epochs 2; kept epoch [12]", stops[0])
    assert len(list(tmp_path.glob("toy/ae-add-latent8-*/seed-*"))) == 2
    bad = CliRunner().invoke(cli, ["fit", "--head", "uni-text", "--latent", "8", *common])
    assert bad.exit_code != 0 and "has no option(s) ['latent']" in bad.output
    r = CliRunner().invoke(cli, ["compare", "--heads", "uni-text,ae-add", "--latent", "8", "--seeds", "1",
                                 "--max-epochs", "2", *common])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "toy" / "leaderboard.md").is_file() and "| ae-add latent=8 | 1 |" in r.output
    # --all-runs adds the other finished families (here the two-seed `fit` runs) without training
    listed = CliRunner().invoke(cli, ["compare", "--heads", "", "--all-runs", *common])
    assert listed.exit_code == 0, listed.output
    assert "| ae-add-latent8 | 2 |" in listed.output and "uni-text | 1 |" in listed.output
    assert "epoch" not in listed.output.lower()  # nothing was trained
    none = CliRunner().invoke(cli, ["compare", "--heads", "", *common])
    assert none.exit_code != 0 and "no runs to list" in none.output
    missing = CliRunner().invoke(cli, ["fit", "--head", "uni-text", "--manifest", str(tmp_path / "nope.parquet")])
    assert missing.exit_code != 0 and "no such manifest" in missing.output
    assert open_cache(caches["text"]).ids[0] == "p0"


def test_finished_entries_read_run_folders_and_keep_labels_unique(tmp_path):
    def run(family, seed, wf1):
        d = tmp_path / family / f"seed-{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"dev": {"accuracy": wf1, "macro_f1": wf1, "weighted_f1": wf1}}))

    run("late-0123456789", 0, 0.70)
    run("late-0123456789", 1, 0.74)
    run("finetune-late-a+b-aaaaaaaaaa", 0, 0.60)  # two fine-tunes whose names differ only in the hash
    run("finetune-late-a+b-bbbbbbbbbb", 0, 0.65)
    (tmp_path / "ae-cat-cccccccccc" / "seed-0.tmp-123").mkdir(parents=True)  # unfinished: not listed
    entries = {e.label: e for e in finished_entries(tmp_path)}
    assert sorted(entries) == ["finetune-late-a+b-aaaaaaaaaa", "finetune-late-a+b-bbbbbbbbbb", "late"]
    mean, std = entries["late"].stat("dev", "weighted_f1")
    assert len(entries["late"].results) == 2 and mean == pytest.approx(0.72) and std == pytest.approx(0.02)
    skip = {(tmp_path / "late-0123456789").resolve()}
    assert "late" not in {e.label for e in finished_entries(tmp_path, skip=skip)}
    assert finished_entries(tmp_path / "missing") == []


def test_the_optimizer_used_is_recorded_and_weights_are_readable_like_the_other_files(world, tmp_path):
    """config.json records the resolved optimiser beside the spec (which keeps None: identities unchanged);
    the card shows it; model.safetensors gets the mode of the run's other files, not safetensors' 0600."""
    import json as _json
    import stat

    from msa_cache.fit.trainer import optimizer_settings

    assert optimizer_settings("adam", TrainConfig())["weight_decay"] == 0.0
    assert optimizer_settings("adamw", TrainConfig(lr=3e-4)) == {
        "optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8,
        "lr_schedule": "constant"}
    assert optimizer_settings("adamw", TrainConfig(optimizer="adam"))["optimizer"] == "adam"
    r = fit_run(_spec(world, "ae-cat", max_epochs=1), tmp_path / "runs", log=lambda m: None)
    config = _json.loads((r.path / "config.json").read_text())
    assert config["spec"]["train"]["lr"] is None  # the spec as given
    assert config["optimizer"] == {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999],
                                   "eps": 1e-8, "lr_schedule": "constant"}  # seed-000 heads: Adam
    assert "- optimiser: adam (lr 0.001, weight_decay 0.0" in (r.path / "README.md").read_text()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in r.path.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["metrics.json"], modes
