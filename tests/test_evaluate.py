"""`msa-cache evaluate`: finished runs scored with a modality dropped, shuffled or noisy, and on another
manifest (transfer), on a token world written by the real extraction pipeline."""
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from msa_cache.finished_run import load_run
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run
from msa_cache.study.corrupt import Corrupter, parse_corruption
from msa_cache.study.eval_table import read_evaluations, robustness_rows, transfer_matrix
from msa_cache.study.evaluate import evaluate, own_features
from msa_cache.train.loop import manifest_labels
from msa_cache_cli.main import main as cli
from worlds import CLASSES, TokenWorld, extract_toy, split_column, write_other_manifest, write_toy_manifest

N, N_TRAIN, N_DEV = 90, 60, 18  # the other 12 rows: a labeled test split
WORLD = TokenWorld(N, 5, 4, 8, 6, strength=3.0, carriers="thirds")
HEADS = {"late": {}, "ab-add": {"latent": 16}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(root, manifest, caches, {head: [seed-0, seed-1 runs]}) with finished runs of late and ab-add."""
    root = tmp_path_factory.mktemp("evaluate")
    manifest = write_toy_manifest(root, WORLD.labels(), split_column(N, N_TRAIN, N_DEV))
    caches = extract_toy(manifest, root, WORLD.encoders())
    runs = {}
    for head, options in HEADS.items():
        runs[head] = [fit_run(RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, head, dict(options),
                                      TrainConfig(max_epochs=10, patience=3), seed), root / "runs",
                              log=lambda m: None).path for seed in (0, 1)]
    return root, manifest, caches, runs


def _copy_runs(world, tmp_path) -> Path:
    """A fresh copy of the world's runs/toy (so each test sees only its own evaluations)."""
    root, *_ = world
    shutil.copytree(root / "runs", tmp_path / "runs")
    return tmp_path / "runs" / "toy"


def _other_manifest(root: Path, name: str, classes=CLASSES, n: int = 45) -> Path:
    """Another labeled manifest (its own rows, ids q0..) of the same world."""
    return write_other_manifest(root, name, WORLD.labels(), classes, n)


def _json(run: Path, name: str) -> dict:
    return json.loads((run / "evals" / f"{name}.json").read_text())


def test_each_corruption_writes_its_files_and_clean_repeats_the_run(world, tmp_path):
    runs_dir = _copy_runs(world, tmp_path)
    specs = ["image=drop", "text=drop", "image=shuffle", "text=shuffle", "image=noise:0.5", "text=noise:2"]
    written = evaluate([runs_dir], [parse_corruption(s, 3) for s in specs], log=lambda m: None)
    names = ["clean", "image-drop", "text-drop", "image-shuffle", "text-shuffle", "image-noise0.5", "text-noise2"]
    assert len(written) == 4 * len(names)  # 2 heads x 2 seeds
    for run in sorted(runs_dir.glob("*/seed-*")):
        assert sorted(p.name for p in (run / "evals").iterdir()) == sorted(
            f"{n}.{ext}" for n in names for ext in ("json", "parquet"))
        metrics = json.loads((run / "metrics.json").read_text())
        clean = _json(run, "clean")
        assert clean["kind"] == "clean" and clean["corruption"] is None and clean["class_map"] is None
        assert clean["run"] == {"path": str(run), "family": run.parent.name, "head": clean["run"]["head"],
                                "seed": int(run.name[5:]), "manifest": "toy", "fold": None, "refit": False}
        assert clean["manifest"]["name"] == "toy" and clean["monitor"] == "weighted-f1"
        assert clean["classes"] == CLASSES and clean["command"] is None and "torch" in clean["versions"]
        for split in ("dev", "test"):  # the clean rows are the run's own: the same scores as metrics.json
            got = clean["splits"][split]
            assert got["confusion"] == metrics[split]["confusion"]
            for key in ("n", "accuracy", "macro_f1", "weighted_f1"):
                assert got[key] == pytest.approx(metrics[split][key], abs=1e-6)
            lo, hi = got["interval"]["weighted_f1"]
            assert lo <= got["weighted_f1"] <= hi
        noise = _json(run, "image-noise0.5")
        assert noise["kind"] == "corruption"
        assert noise["corruption"] == {"side": "image", "type": "noise", "scale": 0.5, "seed": 3}
        t = pq.read_table(run / "evals" / "image-drop.parquet").to_pydict()
        assert list(t) == ["id", "split", "label", "pred", *[f"prob_{c}" for c in CLASSES]]
        assert t["split"].count("dev") == N_DEV and t["split"].count("test") == N - N_TRAIN - N_DEV
        probs = np.stack([t[f"prob_{c}"] for c in CLASSES], 1)
        assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == np.array(t["pred"])).all()
        card = (run / "README.md").read_text()  # the model card lists every evaluation
        assert all(f"| `{n}` |" in card[card.index("## Evaluations"):] for n in names)
    # A third of the rows carry the class in the image only: dropping the image costs the fusion heads.
    rows = {(r["family"], r["evaluation"], r["split"]): r for r in robustness_rows(read_evaluations(runs_dir))}
    late = rows[("late", "image-drop", "dev")]
    assert late["seeds"] == 2 and late["reference"] == "clean" and late["weighted_f1_drop"] < 0
    assert rows[("late", "clean", "dev")]["weighted_f1_drop"] is None


def test_image_drop_on_late_scores_the_text_classifier_alone(world, tmp_path):
    runs_dir = _copy_runs(world, tmp_path)
    run = sorted(runs_dir.glob("late-*/seed-0"))[0]
    evaluate([run], [parse_corruption("image=drop")], log=lambda m: None)
    head, config = load_run(run)
    features = own_features(run, config, RunSpec.from_dict(config["spec"]))
    t = pq.read_table(run / "evals" / "image-drop.parquet").to_pydict()
    pos = {i: k for k, i in enumerate(features.manifest.ids)}
    idx = np.array([pos[i] for i in t["id"]])
    labels, modality_labels = manifest_labels(features.manifest)
    batch = features.batch(idx, labels, modality_labels, False)
    with torch.no_grad():
        text_alone = torch.softmax(head.classifiers["text"](batch.inputs["text"].pooled), -1).numpy()
    got = np.stack([t[f"prob_{c}"] for c in CLASSES], 1)
    assert np.allclose(got, text_alone, atol=1e-5)


def test_shuffle_keeps_the_marginal_and_is_seeded(world):
    _, _, _, runs = world
    run = runs["ab-add"][0]
    head, config = load_run(run)
    features = own_features(run, config, RunSpec.from_dict(config["spec"]))
    rows = np.arange(N_TRAIN, N_TRAIN + N_DEV)
    labels, modality_labels = manifest_labels(features.manifest)
    clean = features.batch(rows, labels, modality_labels, True)
    shuffled = Corrupter(parse_corruption("image=shuffle", 5), head, features, rows)(rows, clean)
    again = Corrupter(parse_corruption("image=shuffle", 5), head, features, rows)(rows, clean)
    other = Corrupter(parse_corruption("image=shuffle", 6), head, features, rows)(rows, clean)
    a, b = clean.inputs["image"].pooled.numpy(), shuffled.inputs["image"].pooled.numpy()
    assert not np.array_equal(a, b)  # rows moved ...
    assert np.array_equal(np.sort(a, axis=0), np.sort(b, axis=0))  # ... but the same vectors, each once
    assert np.array_equal(np.sort(clean.inputs["image"].tokens.numpy().reshape(len(rows), -1), axis=0),
                          np.sort(shuffled.inputs["image"].tokens.numpy().reshape(len(rows), -1), axis=0))
    assert torch.equal(shuffled.inputs["text"].tokens, clean.inputs["text"].tokens)  # the other side untouched
    assert torch.equal(again.inputs["image"].pooled, shuffled.inputs["image"].pooled)
    assert not torch.equal(other.inputs["image"].pooled, shuffled.inputs["image"].pooled)


def test_noise_is_scaled_to_the_train_std_and_keeps_padding(world):
    from msa_cache.study.corrupt import feature_stds

    _, _, _, runs = world
    run = runs["ab-add"][0]
    head, config = load_run(run)
    features = own_features(run, config, RunSpec.from_dict(config["spec"]))
    train = np.arange(N_TRAIN)
    stds = feature_stds(features, train, ["text"], True)
    features.load_pooled()
    assert torch.allclose(stds["text"][0], features.pooled["text"][train].float().std(0, unbiased=False), atol=1e-4)
    rows = np.arange(N_TRAIN, N)
    labels, modality_labels = manifest_labels(features.manifest)
    clean = features.batch(rows, labels, modality_labels, True)
    noisy = Corrupter(parse_corruption("text=noise:0.5"), head, features, rows, stds)(rows, clean)
    pad = ~clean.inputs["text"].mask
    assert pad.any() and (noisy.inputs["text"].tokens[pad] == 0).all()
    delta = (noisy.inputs["text"].pooled - clean.inputs["text"].pooled) / stds["text"][0]
    assert 0.3 < float(delta.std()) < 0.7  # 0.5 x the train std per dimension
    assert torch.equal(noisy.inputs["image"].pooled, clean.inputs["image"].pooled)


@pytest.mark.parametrize("value", ["image=noise:0", "image=noise:-1", "image=noise", "image=blur", "audio=drop",
                                   "image", "text=noise:nan"])
def test_bad_corruptions_are_refused_in_one_line(world, tmp_path, value):
    runs_dir = _copy_runs(world, tmp_path)
    with pytest.raises(ValueError, match="--corrupt"):
        parse_corruption(value)
    result = CliRunner().invoke(cli, ["evaluate", str(runs_dir), "--corrupt", value])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "--corrupt" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(runs_dir.glob("*/*/evals")) == []


def test_transfer_to_another_manifest_with_the_same_cache_settings(world, tmp_path):
    root, *_ = world
    runs_dir = _copy_runs(world, tmp_path)
    other = _other_manifest(tmp_path, "other")
    extract_toy(other, tmp_path, WORLD.encoders())
    result = CliRunner().invoke(cli, ["evaluate", str(runs_dir), "--manifest", str(other), "--cache-root",
                                      str(tmp_path / "cache"), "--corrupt", "image=drop", "--out",
                                      str(tmp_path / "table")])
    assert result.exit_code == 0, result.output
    run = sorted(runs_dir.glob("late-*/seed-0"))[0]
    record = _json(run, "transfer-other")
    assert record["kind"] == "transfer" and record["manifest"]["name"] == "other"
    assert record["run"]["manifest"] == "toy" and record["splits"]["dev"]["n"] == 10
    assert record["splits"]["test"]["n"] == 10 and record["command"].startswith("msa-cache evaluate ")
    both = _json(run, "transfer-other-image-drop")
    assert both["kind"] == "transfer" and both["corruption"]["type"] == "drop"
    assert not (run / "evals" / "clean.json").exists()
    t = pq.read_table(run / "evals" / "transfer-other.parquet").to_pydict()
    assert set(t["id"]) == {f"q{i}" for i in range(25, 45)}
    cells = transfer_matrix(read_evaluations(runs_dir))
    assert {(c["family"], c["eval_manifest"], c["split"]) for c in cells} >= {("late", "other", "dev")}
    md = (tmp_path / "table.md").read_text()
    assert "transfer-other-image-drop" in md and "trained on" in md and (tmp_path / "table.csv").is_file()


def test_transfer_refuses_caches_extracted_otherwise(world, tmp_path):
    runs_dir = _copy_runs(world, tmp_path)
    other = _other_manifest(tmp_path, "other")
    longer = TokenWorld(N, 7, 4, 8, 6, strength=3.0, carriers="thirds")  # another max length (7 text tokens)
    extract_toy(other, tmp_path, longer.encoders())
    result = CliRunner().invoke(cli, ["evaluate", str(runs_dir), "--manifest", str(other), "--cache-root",
                                      str(tmp_path / "cache")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    # The synthetic encoder's weights hash covers its shapes: the first setting that differs.
    assert "was not extracted as the run's text cache (weights_sha256: " in result.output
    assert list(runs_dir.glob("*/*/evals")) == []
    result = CliRunner().invoke(cli, ["evaluate", str(runs_dir), "--manifest", str(other), "--cache-root",
                                      str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "has no text cache" in result.output


def test_a_class_without_counterpart_needs_a_class_map(world, tmp_path):
    runs_dir = _copy_runs(world, tmp_path)
    other = _other_manifest(tmp_path, "renamed", classes=["positive", "neutral", "bad"])
    extract_toy(other, tmp_path, WORLD.encoders())
    args = ["evaluate", str(runs_dir), "--manifest", str(other), "--cache-root", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "'negative'" in result.output and "--class-map negative=" in result.output
    assert list(runs_dir.glob("*/*/evals")) == []
    for bad in ("nope=bad", "negative=nope", "negative"):
        result = CliRunner().invoke(cli, args + ["--class-map", bad])
        assert result.exit_code == 2 and "--class-map" in result.output
    result = CliRunner().invoke(cli, args + ["--class-map", "negative=bad"])
    assert result.exit_code == 0, result.output
    record = _json(sorted(runs_dir.glob("late-*/seed-0"))[0], "transfer-renamed")
    assert record["class_map"] == {"negative": "bad"} and record["classes"] == ["positive", "neutral", "bad"]


def test_fine_tune_and_hostile_folders_are_refused_and_nothing_is_written(world, tmp_path):
    runs_dir = _copy_runs(world, tmp_path)
    run = sorted(runs_dir.glob("late-*/seed-0"))[0]
    fake = run.parent / "seed-7"
    shutil.copytree(run, fake)
    config = json.loads((fake / "config.json").read_text())
    config["mode"] = "finetune"
    config["spec"]["encoders"] = ["toytext", "toyimage"]
    (fake / "config.json").write_text(json.dumps(config))
    half = run.parent / "seed-8"
    shutil.copytree(run, half)
    (half / "metrics.json").unlink()
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("hello")
    stack = runs_dir / "stack-cv3-0123456789"  # a stack folder (compare --stack): no head of its own
    (stack / "refit").mkdir(parents=True)
    (stack / "stacker.json").write_text("{}")
    (stack / "config.json").write_text(json.dumps({"kind": "stack"}))
    (stack / "metrics.json").write_text("{}")
    for target, what in ((fake, "fine-tune run"), (half, "not a finished run"), (stray, "no finished run"),
                         (tmp_path / "absent", "no such folder"), (stack, "a stack folder"),
                         (stack / "refit", "a stack folder")):
        result = CliRunner().invoke(cli, ["evaluate", str(target), "--corrupt", "image=drop"])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and what in result.output
    assert list(runs_dir.glob("*/*/evals")) == [] and list(stray.iterdir()) == [stray / "notes.txt"]
    # In a family folder the fine-tune run is left out with a note, the cached seeds are evaluated.
    result = CliRunner().invoke(cli, ["evaluate", str(run.parent)])
    assert result.exit_code == 0 and "left out 1 fine-tune run" in result.output
    assert (run / "evals" / "clean.json").is_file() and not (fake / "evals").exists()


def test_api_evaluate_returns_the_table(world, tmp_path):
    from msa_cache import api

    runs_dir = _copy_runs(world, tmp_path)
    table = api.evaluate(runs_dir, ["text=drop"], out=tmp_path / "t")
    assert {(r["family"], r["evaluation"]) for r in table.rows} == {
        (f, e) for f in ("late", "ab-add-latent16") for e in ("clean", "text-drop")}
    assert len(table.written) == 8 and "text-drop" in table.markdown() and (tmp_path / "t.csv").is_file()


def test_a_cv_family_counts_each_seed_once_out_of_fold(world, tmp_path):
    from msa_cache.fit.cv import fit_cv

    root, manifest, caches, _ = world
    spec = RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, "late", {},
                   TrainConfig(max_epochs=3, patience=2), 0, cv_folds=3)
    result = fit_cv(spec, 3, tmp_path / "runs", refit=True, log=lambda m: None)
    family = result.path.parent
    evaluate([family], [parse_corruption("text=drop")], log=lambda m: None)
    fold = _json(result.folds[0].path, "clean")
    assert fold["run"]["fold"] == 0 and fold["run"]["family"] == family.name
    assert fold["splits"]["dev"]["n"] == len(np.flatnonzero(
        np.array(pq.read_table(result.folds[0].path / "predictions.parquet").column("split").to_pylist()) == "dev"))
    refit = _json(result.refit.path, "clean")
    assert refit["run"]["refit"] and list(refit["splits"]) == ["test"]  # a refit run has no dev rows
    rows = {(r["family"], r["evaluation"], r["split"]): r for r in robustness_rows(read_evaluations(family))}
    oof = rows[("late-cv3", "clean", "dev")]
    # The folds' held-out rows together: every labeled train+dev row once, scored as compare scores the CV row.
    assert oof["seeds"] == 1 and oof["n"] == N_TRAIN + N_DEV
    assert oof["weighted_f1_mean"] == pytest.approx(result.metrics["dev"]["weighted_f1"], abs=1e-4)
    assert rows[("late-cv3", "clean", "test")]["weighted_f1_mean"] == pytest.approx(
        result.metrics["test"]["weighted_f1"], abs=1e-4)
    assert ("late-cv3", "text-drop", "dev") in rows and ("late-cv3 [refit]", "clean", "test") in rows
    assert ("late-cv3 [refit]", "clean", "dev") not in rows


def test_a_refit_with_nothing_labeled_to_score_is_left_out_of_a_folder_and_refused_by_name(tmp_path):
    from msa_cache.fit.cv import fit_cv

    manifest = write_toy_manifest(tmp_path, WORLD.labels(), split_column(N, N_TRAIN, N_DEV), labeled_test=False)
    caches = extract_toy(manifest, tmp_path, WORLD.encoders())
    spec = RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, "late", {},
                   TrainConfig(max_epochs=2, patience=1), 0, cv_folds=2)
    result = fit_cv(spec, 2, tmp_path / "runs", refit=True, log=lambda m: None)
    notes = []
    evaluate([result.path.parent], [], log=notes.append)  # the family: its folds scored, the refit left out
    assert all((f.path / "evals/clean.json").is_file() for f in result.folds)
    assert not (result.refit.path / "evals").exists()
    assert any(n.startswith("left out 1 run(s) with no labeled dev or test rows") for n in notes)
    r = CliRunner().invoke(cli, ["evaluate", str(result.refit.path)])  # named: refused in one line
    assert r.exit_code == 2 and r.output.startswith("error: the run has no labeled dev or test rows")
    assert len(r.output.strip().splitlines()) == 1 and not (result.refit.path / "evals").exists()


def test_a_tampered_evaluation_is_one_line(world, tmp_path):
    from msa_cache.errors import UserError

    runs_dir = _copy_runs(world, tmp_path)
    run = sorted(runs_dir.glob("late-*/seed-0"))[0]
    evaluate([run], [parse_corruption("text=drop")], log=lambda m: None)
    (run / "evals" / "text-drop.json").write_text('{"format": 2}')
    result = CliRunner().invoke(cli, ["evaluate", str(run)])  # rewrites clean, then reads every evaluation
    assert result.exit_code == 2 and "not one `msa-cache evaluate` wrote (format 1)" in result.output
    assert len(result.output.strip().splitlines()) == 1 + 1  # the clean line, then the error
    evaluate([run], [parse_corruption("text=drop")], log=lambda m: None)  # written again whole
    (run / "evals" / "text-drop.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="text-drop.parquet is missing or unreadable"):
        robustness_rows(read_evaluations(run))
