"""`compare --cv K --stack`: a logistic regression on the grid's out-of-fold probabilities, scored out
of fold over the heads' own folds, a leaderboard row like any other, written to stack-cvK-<hash>/,
refit on every row with --refit, read back by --all-runs, and never reading a test label."""
import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from msa_cache import api
from msa_cache.fit.config import TrainConfig
from msa_cache.fit.folds import pooled_rows
from msa_cache.manifest import read_manifest
from msa_cache.study.compare import compare, summarise, write_leaderboard
from msa_cache.study.stack import (
    STACKER_FILE, StackerSettings, StackMember, apply_stacker, check_members, fit_stack, fit_stacker, out_of_fold,
    stacker_params,
)
from msa_cache.train.predictions import read_run_predictions
from msa_cache_cli.main import main as cli
from pooled_world import make_world

FAST = TrainConfig(max_epochs=4, patience=2)
HEADS = ["uni-text", "uni-image", "late"]
LABEL = "stack [uni-text+uni-image+late]"
QUIET = dict(log=lambda m: None)


def _caches(cache_root: Path) -> dict[str, Path]:
    return {"text": cache_root / "toy/toytext", "image": cache_root / "toy/toyimage"}


def _grid(manifest, cache_root, runs, **kw):
    return compare(manifest, _caches(cache_root), HEADS, {}, [0, 1], FAST, runs, cv=3, refit=True, stack=True,
                   **QUIET, **kw)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A labeled toy world and its cross-validated, refit and stacked grid."""
    root = tmp_path_factory.mktemp("stack")
    manifest, cache_root = make_world(root / "world")
    return manifest, cache_root, root / "runs", _grid(manifest, cache_root, root / "runs")


def _stack_row(entries):
    [row] = [e for e in entries if e.kind == "stack"]
    return row


def test_the_stack_row_has_intervals_p_values_and_its_folder(clean, tmp_path):
    manifest, _, runs, entries = clean
    row = _stack_row(entries)
    assert row.label == LABEL and row.n_seeds == 2
    m = read_manifest(manifest)
    pool = np.sort(np.array(m.ids, dtype=object)[pooled_rows(np.array(m.column("split")), m.labels("label"))])
    oof = row.predictions()["dev"]
    assert np.array_equal(oof.ids, pool) and oof.probs.shape == (1, len(pool), 3)
    np.testing.assert_allclose(oof.probs.sum(-1), 1, rtol=1e-5)
    rows = summarise(entries, "weighted-f1", n_resamples=300)
    assert not any("[seed ensemble]" in r.label and "stack" in r.label for r in rows)  # one model: no ensemble row
    row = _stack_row(rows)
    lo, hi = row.stats["dev"].interval["weighted_f1"]
    assert lo <= row.stat("dev", "weighted_f1")[0] <= hi
    assert (row.stats["dev"].p_top is None) == (row is rows[0]) and "test" in row.stats
    if row is not rows[0]:
        assert 0 < row.stats["dev"].p_top <= 1 and row.stats["dev"].mcnemar_top is not None
    md, csv_path, png = write_leaderboard(rows, tmp_path / "lb", "weighted-f1")
    assert LABEL in md.read_text() and png.stat().st_size > 1000
    with open(csv_path) as f:
        [stacked] = [r for r in csv.DictReader(f) if r["model"] == LABEL]
    assert stacked["kind"] == "stack" and stacked["seeds"] == "2" and stacked["cv_weighted_f1_ci_low"]
    folder = row.results[0].path
    assert folder.parent == runs / "toy" and folder.name.startswith("stack-cv3-")
    assert {p.name for p in folder.iterdir()} == {"config.json", STACKER_FILE, "predictions.parquet",
                                                 "metrics.json", "refit"}
    config = json.loads((folder / "config.json").read_text())
    assert [x["label"] for x in config["members"]] == HEADS and config["cv_folds"] == 3 and config["seeds"] == 2
    assert config["stacker"]["Cs"] == list(StackerSettings().Cs) and len(config["outer_fold_C"]) == 3
    params = json.loads((folder / STACKER_FILE).read_text())
    assert np.array(params["coef"]).shape == (3, 9) and params["C"] in StackerSettings().Cs
    assert params["features"][0] == "uni-text:" + params["classes"][0]


def test_stacked_rows_are_out_of_fold_over_the_heads_folds(clean):
    """Each fold's stacked probabilities come from a stacker fitted on the other folds' rows only."""
    _, _, _, entries = clean
    families = sorted((e for e in entries if e.kind == "cv"), key=lambda e: HEADS.index(e.label))  # grid order
    held_ids = check_members([StackMember(e.label, _cv_results(e)) for e in families])
    oof = _stack_row(entries).predictions()["dev"]
    x = np.concatenate([e.predictions()["dev"].probs.mean(0) for e in families], axis=1)
    y = oof.labels
    classes = _stack_row(entries).classes
    for ids in held_ids:
        rows = np.searchsorted(oof.ids, ids)
        train = np.setdiff1d(np.arange(len(y)), rows)
        params = stacker_params(fit_stacker(x[train], y[train], StackerSettings(), 3), [], classes)
        np.testing.assert_allclose(oof.probs[0, rows], apply_stacker(params, x[rows]), atol=1e-7)


def _cv_results(entry):
    from msa_cache.fit.cv import CVResult, cv_predictions, finished_cv_seeds
    from msa_cache.train.rundir import RunResult

    out = []
    for seed_dir, folds, refit in finished_cv_seeds(entry.results[0].path.parent):
        classes, preds = cv_predictions(folds)
        out.append(CVResult(seed_dir, [RunResult(f, {}, True) for f in folds], classes, preds, {},
                            None if refit is None else RunResult(refit, {}, True)))
    return out


def test_a_rows_own_label_never_reaches_its_stacked_prediction():
    """Flipping one row's label changes no prediction of its own fold (the stacker of that fold never saw it)."""
    rng = np.random.default_rng(0)
    n, k = 150, 3
    y = rng.integers(0, k, n)
    x = np.concatenate([np.eye(k)[y] * 0.6 + rng.dirichlet(np.ones(k), n) * 0.4 for _ in range(2)], axis=1)
    held = [np.arange(f, n, 3) for f in range(3)]
    before, _ = out_of_fold(x, y, held, StackerSettings(), [], ["a", "b", "c"])
    flipped = y.copy()
    flipped[held[1][5]] = (y[held[1][5]] + 1) % k
    after, _ = out_of_fold(x, flipped, held, StackerSettings(), [], ["a", "b", "c"])
    np.testing.assert_array_equal(after[held[1]], before[held[1]])
    assert not np.array_equal(after[held[0]], before[held[0]])  # the other folds' stackers did see it


def test_two_classes_apply_as_sklearn_predicts():
    rng = np.random.default_rng(1)
    x, y = rng.random((80, 4)), rng.integers(0, 2, 80)
    model = fit_stacker(x, y, StackerSettings(), 2)
    np.testing.assert_allclose(apply_stacker(stacker_params(model, [], ["a", "b"]), x), model.predict_proba(x),
                               atol=1e-12)


def _parquet(path: Path) -> dict:
    return pq.read_table(path).to_pydict()


def test_no_test_label_is_read(clean, tmp_path):
    """The same grid on a manifest whose test labels are poisoned: same stacker, same predictions, same
    leaderboard but for its test columns; only the test labels and test scores differ."""
    manifest, cache_root, runs, entries = clean
    poisoned_manifest, poisoned_cache = make_world(tmp_path / "poisoned", poison_test=True)
    poisoned = _grid(poisoned_manifest, poisoned_cache, tmp_path / "runs")
    a, b = _stack_row(entries).results[0].path, _stack_row(poisoned).results[0].path
    assert (a / STACKER_FILE).read_bytes() == (b / STACKER_FILE).read_bytes()
    for folder in ("", "refit"):
        ta, tb = _parquet(a / folder / "predictions.parquet"), _parquet(b / folder / "predictions.parquet")
        test = np.array(ta["split"]) == "test"
        assert test.any() and {k: v for k, v in ta.items() if k != "label"} == {k: v for k, v in tb.items()
                                                                             if k != "label"}
        la, lb = np.array(ta["label"]), np.array(tb["label"])
        assert np.array_equal(la[~test], lb[~test]) and not np.array_equal(la[test], lb[test])  # the poison is real
        ma, mb = (json.loads((x / folder / "metrics.json").read_text()) for x in (a, b))
        assert ma.pop("test") != mb.pop("test") and ma == mb
    # config.json: the same but for the member folders' hashes (run identities hash the manifest, labels included)
    ca, cb = (json.loads((x / "config.json").read_text()) for x in (a, b))
    for c in (ca, cb):
        for member in c["members"]:
            member.pop("family")
    assert ca == cb

    def cv_columns(rows, out):
        with open(write_leaderboard(summarise(rows, "weighted-f1", n_resamples=200), out, "weighted-f1")[1]) as f:
            return [{k: v for k, v in r.items() if not k.startswith("test_")} for r in csv.DictReader(f)]

    assert cv_columns(entries, tmp_path / "a") == cv_columns(poisoned, tmp_path / "b")


def test_refit_predicts_every_row_and_all_runs_reads_the_stack_back(clean, tmp_path):
    manifest, cache_root, runs, entries = clean
    row = _stack_row(entries)
    [refit] = row.refits
    table = _parquet(refit / "predictions.parquet")
    m = read_manifest(manifest)
    assert table["id"] == list(m.ids) and "test" in table["split"]
    assert set(json.loads((refit / "metrics.json").read_text())) == {"train", "test"}
    listed = compare(manifest, _caches(cache_root), [], {}, [0], FAST, runs, cv=3, all_runs=True, **QUIET)
    back = _stack_row(listed)
    assert back.label == LABEL and back.refits == [refit] and back.n_seeds == 2
    assert back.stat("dev", "weighted_f1") == row.stat("dev", "weighted_f1")
    np.testing.assert_array_equal(back.predictions()["dev"].probs, row.predictions()["dev"].probs)
    assert sorted(e.label for e in listed if e.kind == "cv") == sorted(HEADS)
    assert not [e for e in compare(manifest, _caches(cache_root), [], {}, [0], FAST, runs, all_runs=True, **QUIET)
                if "stack" in e.label]  # a plain (non-CV) leaderboard has no stack row
    board = api.compare(manifest, HEADS, seeds=2, cache_root=cache_root, text_cache="toytext", image_cache="toyimage",
                        runs=runs, cv=3, refit=True, stack=True, resamples=200, leaderboard=tmp_path / "api",
                        max_epochs=4, patience=2)  # the Python API: the same grid, found finished, the same stack
    assert _stack_row(board.entries).results[0].path == row.results[0].path
    assert next(r for r in board.rows if r["model"] == LABEL)["kind"] == "stack"
    # the stack's test predictions are the refit's: --export-test writes them like a family's
    r = CliRunner().invoke(cli, ["compare", "--heads", ",".join(HEADS), "--cv", "3", "--refit", "--stack",
                                 "--seeds", "2", "--max-epochs", "4", "--patience", "2", "--resamples", "200",
                                 "--manifest", str(manifest), "--cache-root", str(cache_root), "--runs", str(runs),
                                 "--export-test", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    assert LABEL in r.output and "refit on every row" in r.output
    items = json.loads((tmp_path / "exp" / "stack_uni-text+uni-image+late.json").read_text())
    test_ids = [i for i, s in zip(table["id"], table["split"]) if s == "test"]
    assert [i["id"] for i in items] == sorted(test_ids)
    by_id = dict(zip(table["id"], table["pred"]))
    assert [i["label"] for i in items] == [m.classes[by_id[i["id"]]] for i in items]


def test_refusals_are_one_line(clean, tmp_path):
    manifest, cache_root, runs, entries = clean
    common = ["--manifest", str(manifest), "--cache-root", str(cache_root), "--runs", str(tmp_path / "r")]
    r = CliRunner().invoke(cli, ["compare", "--heads", "late,uni-text", "--stack", *common])
    assert r.exit_code != 0 and "--stack goes with --cv" in r.output and r.output.strip().count("\n") == 0
    r = CliRunner().invoke(cli, ["compare", "--heads", "late", "--cv", "3", "--stack", *common])
    assert r.exit_code != 0 and "at least 2 run families" in r.output and r.output.strip().count("\n") == 0
    assert not (tmp_path / "r").exists()  # refused before any training
    with pytest.raises(ValueError, match="goes with --cv"):
        compare(manifest, _caches(cache_root), HEADS, {}, [0], FAST, tmp_path / "r", stack=True, **QUIET)
    # families cross-validated on other folds (another --cv-seed) cannot be stacked
    other = compare(manifest, _caches(cache_root), ["uni-text"], {}, [0], FAST, tmp_path / "o", cv=3, cv_seed=1,
                    **QUIET)
    late = next(e for e in entries if e.label == "late")
    with pytest.raises(ValueError, match="other rows or folds"):
        fit_stack([StackMember("late", _cv_results(late)), StackMember("uni-text", _cv_results(other[0]))], 3, 0,
                  tmp_path / "s", **QUIET)
    assert not (tmp_path / "s").exists()


def test_a_refit_stack_predicts_new_posts(tmp_path, tokenizer):
    """msa_cache.load(STACK) and `msa-cache predict STACK` run the members' refits on raw posts and
    reproduce the stack's own refit predictions; a stack without refit is refused in one line."""
    from msa_cache import load
    from msa_cache.extract import extract
    from test_finetune import make_world as model_world  # posts with real (tiny) encoder folders

    root, manifest, bert, vit = model_world(tmp_path, tokenizer)
    extract(manifest, [str(bert), str(vit)], root / "cache", shard_size=16, batch_size=4, workers=0, progress=False,
            log=lambda m: None)
    caches = {"text": root / "cache/toy/path-tiny-bert", "image": root / "cache/toy/path-tiny-vit"}
    train = TrainConfig(max_epochs=3, batch_size=8)
    plain = compare(manifest, caches, ["uni-text", "late"], {}, [0], train, root / "runs", cv=3, stack=True, **QUIET)
    r = CliRunner().invoke(cli, ["predict", str(_stack_row(plain).results[0].path), "--text", "good"])
    assert r.exit_code != 0 and "has no refit" in r.output and r.output.strip().count("\n") == 0
    entries = compare(manifest, caches, ["uni-text", "late"], {}, [0, 1], train, root / "runs", cv=3, refit=True,
                      stack=True, **QUIET)
    folder = _stack_row(entries).results[0].path
    want = _parquet(folder / "refit" / "predictions.parquet")
    man = read_manifest(manifest)
    model = load(folder)
    assert model.classes == man.classes and model.uses == {"text", "image"}
    images = [str(man.image_path(p)) for p in man.column("image")]
    probs = model.predict_proba(man.column("text"), images)
    usable = np.array(man.column("image_ok"), dtype=bool)  # a row the manifest marks imageless was fitted without it
    np.testing.assert_allclose(probs[usable], np.array([want[f"prob_{c}"] for c in man.classes]).T[usable], atol=1e-4)
    assert model.predict(man.column("text")[:3], images[:3]) == [man.classes[p] for p in want["pred"][:3]]
    r = CliRunner().invoke(cli, ["predict", str(folder), "--manifest", str(manifest), "-o", str(tmp_path / "p.parquet")])
    assert r.exit_code == 0, r.output
    got = _parquet(tmp_path / "p.parquet")
    assert got["id"] == want["id"] and got["pred"] == want["pred"]
