"""compare's trustworthy side: seed ensembles, cross-validation folds (disjoint, stratified,
resumable, refit), intervals and p-values in the leaderboard, held-out test reporting that
never picks, --export-test, and the oracle over run families."""
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from msa_cache.manifest import read_manifest
from msa_cache.study.compare import compare, seed_ensembles, summarise, write_leaderboard
from msa_cache.fit.config import TrainConfig
from msa_cache.fit.cv import refit_choice
from msa_cache.study.submission import export_test
from msa_cache.fit.folds import pooled_rows, run_roles
from msa_cache.study.oracle import family_oracle
from msa_cache.train.predictions import read_run_predictions
from msa_cache_cli.main import main as cli

from test_runs import N, N_DEV, N_TRAIN, WORLD, world  # noqa: F401  (the toy world of test_runs, module-scoped)
from worlds import extract_toy, split_column, write_toy_manifest

FAST = TrainConfig(max_epochs=4, patience=2)


def _make_world(root, y_test, builder="clmlf"):
    label = WORLD.labels().copy()
    label[N_TRAIN + N_DEV:] = y_test
    return write_toy_manifest(root, label, split_column(N, N_TRAIN, N_DEV), builder=builder)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """The toy world of test_runs with a labeled test split, in CLMLF's class order."""
    root = tmp_path_factory.mktemp("labeled")
    y = WORLD.labels()
    manifest = _make_world(root, y[N_TRAIN + N_DEV:])
    return root, manifest, extract_toy(manifest, root, WORLD.encoders())


def test_cv_folds_are_disjoint_stratified_and_cover_train_dev_once():
    rng = np.random.default_rng(0)
    n = 500
    splits = rng.choice(["train", "dev", "test"], n, p=[0.7, 0.15, 0.15])
    labels = rng.choice(3, n, p=[0.6, 0.25, 0.15])
    labels[rng.random(n) < 0.05] = -1  # a few unlabeled rows
    pool = pooled_rows(splits, labels)
    k = 5
    held = []
    for fold in range(k):
        roles = run_roles(splits, labels, k, fold, cv_seed=3)
        assert np.all(roles[splits == "test"] == "test")  # test untouched
        dev = np.flatnonzero(roles == "dev")
        train = np.flatnonzero(roles == "train")
        assert set(dev).isdisjoint(train) and set(dev) | set(train) == set(pool)
        expected = np.bincount(labels[pool], minlength=3) / k
        assert np.all(np.abs(np.bincount(labels[dev], minlength=3) - expected) <= 1)  # stratified
        held.append(dev)
    allheld = np.concatenate(held)
    assert len(allheld) == len(pool) and set(allheld) == set(pool)  # each pooled row held out exactly once
    assert not np.array_equal(held[0], np.flatnonzero(run_roles(splits, labels, k, 0, cv_seed=4) == "dev"))
    refit = run_roles(splits, labels, k, refit=True)
    assert set(np.flatnonzero(refit == "train")) == set(pool) and not (refit == "dev").any()
    rare = np.zeros(n, dtype=int)
    rare[pool[0]] = 1  # one row of class 1: it cannot be in 5 folds
    with pytest.raises(ValueError, match="fewer labeled"):
        run_roles(splits, rare, 5, 0)


def test_seed_ensemble_row_is_the_mean_of_seed_probabilities(world, tmp_path):
    root, manifest, caches = world
    entries = compare(manifest, caches, ["uni-text"], {}, [0, 1, 2], FAST, tmp_path, log=lambda m: None)
    [ens] = seed_ensembles(entries)
    assert ens.kind == "ensemble" and ens.n_seeds == 3 and "[seed ensemble]" in ens.label
    seeds = [read_run_predictions(r.path)[1]["dev"] for r in entries[0].results]
    mean = np.mean([s.probs[0] for s in seeds], axis=0)
    np.testing.assert_allclose(ens.predictions()["dev"].probs[0], mean, rtol=1e-6)
    y = seeds[0].labels
    assert ens.stat("dev", "accuracy")[0] == pytest.approx(float((mean.argmax(1) == y).mean()))
    assert "test" in ens.predictions() and not ens.predictions()["test"].is_labeled  # unlabeled: no scores
    rows = summarise(entries, "weighted-f1", n_resamples=300)
    assert len(rows) == 2 and all("dev" in r.stats for r in rows)  # the ensemble takes part in the tests


def test_leaderboard_intervals_p_values_and_marks(world, tmp_path):
    root, manifest, caches = world
    entries = compare(manifest, caches, ["uni-text", "uni-image", "probe", "late"], {}, [0, 1], FAST, tmp_path,
                      log=lambda m: None)
    rows = summarise(entries, "weighted-f1", n_resamples=500)
    top = rows[0]
    assert top.stats["dev"].p_top is None
    probe = next(r for r in rows if r.label == "probe")
    assert probe.stats["dev"].p_probe is None
    image = next(r for r in rows if r.label == "uni-image")
    assert image.stats["dev"].p_probe is not None and 0 < image.stats["dev"].p_top <= 1
    lo, hi = top.stats["dev"].interval["weighted_f1"]
    assert lo <= top.stat("dev", "weighted_f1")[0] <= hi
    md, csv_path, png = write_leaderboard(rows, tmp_path / "lb", "weighted-f1")
    text = md.read_text()
    assert "dev weighted-f1 95% CI" in text and "p vs top" in text and "McNemar vs probe" in text
    assert "picked (dev)" in text and "500 resamples" in text
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert {"dev_weighted_f1_ci_low", "dev_p_vs_top_weighted_f1", "dev_mcnemar_vs_probe", "picked"} <= set(table[0])
    assert sum(r["picked"] == "True" for r in table) == 1 and png.stat().st_size > 1000
    tied = [r for r in rows[1:] if r.stats["dev"].tied_with_top]
    assert text.count("≈ top") == len(tied)


def test_cv_compare_resumable_out_of_fold_and_refit(world, tmp_path):
    root, manifest, caches = world
    log = []
    entries = compare(manifest, caches, ["uni-text", "probe"], {}, [0], FAST, tmp_path, log=log.append, cv=3,
                      refit=True)
    assert {e.kind for e in entries} == {"cv"}
    m = read_manifest(manifest)
    splits, labels = np.array(m.column("split")), m.labels("label")
    pool_ids = np.sort(np.array(m.ids, dtype=object)[pooled_rows(splits, labels)])
    for e in entries:
        oof = e.predictions()["dev"]
        assert np.array_equal(oof.ids, pool_ids)  # every train+dev row once, out of fold
        seed_dir = e.results[0].path
        assert sorted(p.name for p in seed_dir.glob("fold-*")) == ["fold-0", "fold-1", "fold-2"]
        assert seed_dir.parent.name.startswith(f"{e.head}-cv3-")
        [refit] = e.refits
        choice = refit_choice([seed_dir / f"fold-{k}" for k in range(3)])
        assert refit.name == "refit" + "".join(f"-{k}{v}" for k, v in choice.items())
        cfg = json.loads((refit / "config.json").read_text())["spec"]
        assert cfg["refit"] == choice and cfg["cv_folds"] == 3
        train = read_run_predictions(refit)[1]["train"]
        assert np.array_equal(train.ids, pool_ids)  # the refit trained on all of train+dev
    uni = next(e for e in entries if e.head == "uni-text")
    hist = [json.loads(x) for x in (uni.refits[0] / "history.jsonl").read_text().splitlines()]
    assert len([h for h in hist if "epoch" in h]) == refit_choice(
        [uni.results[0].path / f"fold-{k}" for k in range(3)])["epochs"]
    # resumable: everything is found finished
    again = compare(manifest, caches, ["uni-text"], {}, [0], FAST, tmp_path, log=log.append, cv=3, refit=True)
    assert all(r.skipped for r in again[0].results)
    # a plain compare does not list the CV families, a CV one with --all-runs does
    listed = compare(manifest, caches, [], {}, [0], FAST, tmp_path, log=log.append, cv=3, all_runs=True)
    assert sorted(e.label for e in listed) == ["probe", "uni-text"]
    assert compare(manifest, caches, [], {}, [0], FAST, tmp_path, log=log.append, all_runs=True) == []


def test_cli_cv_fit_compare_and_export(world, tmp_path):
    root, manifest, caches = world
    common = ["--manifest", str(manifest), "--cache-root", str(root / "cache"), "--runs", str(tmp_path)]
    r = CliRunner().invoke(cli, ["fit", "--head", "uni-image", "--cv", "3", "--refit", "--max-epochs", "3", *common])
    assert r.exit_code == 0, r.output
    assert "out-of-fold accuracy" in r.output and "refit:" in r.output
    bad = CliRunner().invoke(cli, ["fit", "--head", "uni-image", "--refit", *common])
    assert bad.exit_code != 0 and "--refit goes with --cv" in bad.output
    r = CliRunner().invoke(cli, ["compare", "--heads", "uni-image,uni-text", "--cv", "3", "--seeds", "2",
                                 "--max-epochs", "3", "--resamples", "200", "--export-test", str(tmp_path / "exp"),
                                 *common])
    assert r.exit_code == 0, r.output
    assert "cv weighted-f1 95% CI" in r.output and "picked (cv)" in r.output
    assert (tmp_path / "toy" / "leaderboard-cv3.md").is_file()
    files = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert files == ["uni-image.json", "uni-text.json"]  # one per family, not per ensemble row
    items = json.loads((tmp_path / "exp" / "uni-text.json").read_text())
    assert len(items) == N - N_TRAIN - N_DEV and set(items[0]) == {"id", "label"}  # not a CLMLF manifest
    again = CliRunner().invoke(cli, ["compare", "--heads", "uni-text", "--seeds", "1", "--max-epochs", "3",
                                     "--export-test", str(tmp_path / "exp"), *common])
    assert again.exit_code != 0 and "not empty" in again.output


def _pick_and_dev(labeled_world, runs):
    root, manifest, caches = labeled_world
    entries = compare(manifest, caches, ["uni-text", "uni-image", "late"], {}, [0], FAST, runs, log=lambda m: None)
    rows = summarise(entries, "weighted-f1", n_resamples=200)
    return rows, [(r.label, r.stat("dev", "weighted_f1")[0]) for r in rows]


def test_test_labels_never_pick(labeled, tmp_path):
    rows, dev = _pick_and_dev(labeled, tmp_path / "a")
    assert rows[0].stat("test", "accuracy") is not None and "test" in rows[0].stats
    md = write_leaderboard(rows, tmp_path / "lb")[0].read_text()
    assert "test accuracy" in md and "picked (dev)" in md
    # the same world with its test labels poisoned (all flipped): new runs, same dev scores, same pick
    root, manifest, caches = labeled
    poisoned_root = tmp_path / "poisoned"
    y = WORLD.labels()
    poisoned = _make_world(poisoned_root, (y[N_TRAIN + N_DEV:] + 1) % 3)
    rows2, dev2 = _pick_and_dev((poisoned_root, poisoned, caches), tmp_path / "b")
    assert dev2 == dev and rows2[0].label == rows[0].label
    assert rows2[0].stat("test", "accuracy")[0] != rows[0].stat("test", "accuracy")[0]
    # export in CLMLF's own layout
    written = export_test(rows, read_manifest(manifest), tmp_path / "export")
    items = json.loads(written[0].read_text())
    assert set(items[0]) == {"id", "emotion_label"} and {i["emotion_label"] for i in items} <= {0, 1, 2}


def test_oracle_over_run_families(labeled, tmp_path):
    root, manifest, caches = labeled
    entries = compare(manifest, caches, ["uni-text", "uni-image", "late"], {}, [0, 1], FAST, tmp_path,
                      log=lambda m: None)
    fam = {e.head: e.results[0].path.parent for e in entries}
    r = family_oracle(fam["uni-text"], fam["uni-image"], fam["late"])
    assert r["split"] == "test" and r["seeds"] == 2 and r["rows"] == N - N_TRAIN - N_DEV
    assert r["oracle_accuracy"] >= max(r["text_accuracy"], r["image_accuracy"])
    assert r["multimodal_share_of_oracle"] == pytest.approx(r["multimodal_accuracy"] / r["oracle_accuracy"])
    one = family_oracle(fam["uni-text"] / "seed-0", fam["uni-image"] / "seed-0", split="dev")
    assert one["split"] == "dev" and one["seeds"] == 1 and one["rows"] == N_DEV
    r = CliRunner().invoke(cli, ["analyze", "oracle", "--text-run", str(fam["uni-text"]), "--image-run",
                                 str(fam["uni-image"]), "--multi-run", str(fam["late"])])
    assert r.exit_code == 0, r.output
    assert "on test (labeled)" in r.output and "share of the oracle" in r.output
