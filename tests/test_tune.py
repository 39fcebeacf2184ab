"""`msa-cache tune`: the space comes from field metadata, trials are run directories scored on
dev only, pruned trials leave nothing, and several processes share one journal."""
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

optuna = pytest.importorskip("optuna")

from msa_cache.fit.config import RunSpec, TrainConfig  # noqa: E402
from msa_cache.fit.trainer import fit_run  # noqa: E402
from msa_cache.study.tune import _run_trial, fit_command, journal_storage, search_space, tune  # noqa: E402
from msa_cache.search_space import Choice, Range  # noqa: E402
from msa_cache_cli.main import main as cli  # noqa: E402
from pooled_world import N_DEV, N_TRAIN, make_world  # noqa: E402

QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("tune"))


def _caches(cache_root: Path) -> dict[str, Path]:
    return {"text": cache_root / "toy/toytext", "image": cache_root / "toy/toyimage"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_space_comes_from_the_config_fields_less_the_fixed_ones():
    names = {p.name: p for p in search_space("ae-cat")}
    assert set(names) == {"hidden", "dropout", "latent", "lambda_rec", "lr", "weight_decay"}
    assert names["lr"].scope == "train" and names["lr"].space == Range(1e-4, 1e-2, log=True)
    assert names["latent"].scope == "head" and isinstance(names["latent"].space, Choice)
    assert names["latent"].default == 64
    assert {p.name for p in search_space("mdse")} >= {"width", "lambda_macl", "dropout"}
    assert {p.name for p in search_space("ae-cat", fixed={"latent", "lr"})} == {"hidden", "dropout", "lambda_rec",
                                                                               "weight_decay"}
    with pytest.raises(ValueError, match=r"head 'probe' .*ProbeConfig\) declares no search space: tune one of ab-add"):
        search_space("probe")
    with pytest.raises(ValueError, match="empty"):
        Range(1.0, 1.0)


def test_dry_run_prints_the_space_and_a_head_without_one_is_an_error(tmp_path):
    r = CliRunner().invoke(cli, ["tune", "--head", "ae-cat", "--trials", "5", "--dry-run", "--latent", "32"])
    assert r.exit_code == 0, r.output
    assert re.search(r"lambda_rec\s+head\s+log-uniform \[0.01, 10\]", r.output)
    assert re.search(r"lr\s+train\s+log-uniform \[0.0001, 0.01\]", r.output) and "fixed: latent" in r.output
    assert not re.search(r"^\s+latent ", r.output, re.M)
    bad = CliRunner().invoke(cli, ["tune", "--head", "probe", "--trials", "5", "--dry-run"])
    assert bad.exit_code != 0 and "declares no search space" in bad.output and "Traceback" not in bad.output
    assert bad.output.strip().count("\n") == 0


def test_a_pruned_run_leaves_no_run_directory(world, tmp_path):
    manifest, cache_root = world
    spec = RunSpec(str(manifest), {k: str(v) for k, v in _caches(cache_root).items()}, "ae-cat", {},
                   TrainConfig(max_epochs=5), 0)
    seen = []

    def stop(epoch, record):
        seen.append((epoch, record["dev_weighted_f1"]))
        if epoch == 2:
            raise optuna.TrialPruned("epoch 2")

    with pytest.raises(optuna.TrialPruned):
        fit_run(spec, tmp_path, on_epoch_end=stop, **QUIET)
    assert [e for e, _ in seen] == [1, 2] and all(0 <= s <= 1 for _, s in seen)
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.tmp-*"))


def test_the_objective_never_reads_test_labels(world, tmp_path):
    """Same search on a manifest whose test labels are poisoned: same trials, same scores."""
    clean_manifest, clean_cache = world
    poisoned_manifest, poisoned_cache = make_world(tmp_path / "poisoned", poison_test=True)
    before = _sha(clean_manifest)
    results = []
    for manifest, cache_root, runs in ((clean_manifest, clean_cache, tmp_path / "a"),
                                       (poisoned_manifest, poisoned_cache, tmp_path / "b")):
        res = tune(manifest, _caches(cache_root), "ae-cat", 5, train=TrainConfig(max_epochs=4), runs_root=runs,
                   seeds=1, sampler_seed=7, **QUIET)
        study = optuna.load_study(study_name=res.study_name, storage=journal_storage(res.storage))
        results.append((res, [(t.state, t.value, t.params) for t in study.trials]))
    (clean, clean_trials), (poisoned, poisoned_trials) = results
    assert clean_trials == poisoned_trials and len(clean_trials) == 5
    assert clean.best_value == poisoned.best_value
    # the poison is real: the runs' test scores (which nothing chose by) differ
    test = [json.loads((r.best_run / "metrics.json").read_text())["test"]["accuracy"] for r in (clean, poisoned)]
    assert test[0] != test[1]
    assert _sha(clean_manifest) == before


def test_two_processes_share_one_journal(world, tmp_path):
    manifest, cache_root = world
    before = _sha(manifest)
    journal = tmp_path / "study.journal"
    args = ["tune", "--head", "ae-cat", "--trials", "7", "--storage", str(journal), "--max-epochs", "4",
            "--seeds", "2", "--manifest", str(manifest), "--cache-root", str(cache_root), "--runs", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    procs = [subprocess.Popen([sys.executable, "-m", "msa_cache_cli.main", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    name = re.search(r"study (ae-cat-\w+) in", outputs[0]).group(1)
    trials = optuna.load_study(study_name=name, storage=journal_storage(journal)).trials
    counted = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(counted) == 7 and {t.state.name for t in counted} <= {"COMPLETE", "PRUNED"}
    assert sum(int(re.search(r"this process ran (\d+) trial", out).group(1)) for out in outputs) == 7

    # every finished trial is a run directory; pruned ones left none
    complete = [t for t in counted if t.state.name == "COMPLETE"]
    families = {p.parent.parent for p in (tmp_path / "toy").rglob("metrics.json")}
    assert families == {Path(t.user_attrs["run"]).parent for t in complete}
    best = max(complete, key=lambda t: t.value)
    assert (Path(best.user_attrs["run"]) / "metrics.json").is_file()
    listed = CliRunner().invoke(cli, ["compare", "--heads", "", "--all-runs", "--manifest", str(manifest),
                                      "--cache-root", str(cache_root), "--runs", str(tmp_path)])
    # one row per trial family (the best config, re-run over --seeds, adds its seed-ensemble row)
    rows = [line for line in listed.output.splitlines() if line.startswith("| ae-cat") and "[seed ensemble]" not in line]
    assert listed.exit_code == 0 and len(rows) == len(complete), listed.output

    # the process that found no trial running printed the best config as a `fit` command that
    # reproduces it: running that command finds every seed already finished
    final = [out for out in outputs if "reproduce: " in out]
    assert final, outputs
    command = re.search(r"reproduce: (.*)", final[0]).group(1)
    assert "seed 1: dev weighted-f1" in final[0]
    r = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert r.exit_code == 0 and r.output.count("already finished, skipped") == 2, r.output
    assert best.user_attrs["run"] in r.output
    assert _sha(manifest) == before


def test_fit_command_flags(world):
    manifest, cache_root = world
    spec = RunSpec(str(manifest), {k: str(v) for k, v in _caches(cache_root).items()}, "mdse",
                   {"width": 128, "macl": False}, TrainConfig(lr=0.002, text_pool="mean", amp=False), 0)
    cmd = fit_command(spec, "runs", [0, 1])
    assert "--no-macl --width 128" in cmd and "--lr 0.002" in cmd and "--text-pool mean" in cmd
    assert "--no-amp" in cmd and "--text-cache toytext" in cmd and cmd.endswith("--seed 0 --seed 1")
    assert "--device" not in cmd


def _oof_weighted_f1(seed_dir: Path, num_folds: int) -> float:
    """The out-of-fold weighted F1 recomputed from the fold runs' own predictions."""
    from sklearn.metrics import f1_score

    from msa_cache.fit.cv import cv_predictions

    _, preds = cv_predictions([seed_dir / f"fold-{k}" for k in range(num_folds)])
    oof = preds["dev"].labeled()
    return float(f1_score(oof.labels, oof.preds[0], average="weighted"))


def test_cv_trials_are_scored_out_of_fold_and_never_read_test_labels(world, tmp_path):
    clean_manifest, clean_cache = world
    poisoned_manifest, poisoned_cache = make_world(tmp_path / "poisoned", poison_test=True)
    results = []
    for manifest, cache_root, runs in ((clean_manifest, clean_cache, tmp_path / "a"),
                                       (poisoned_manifest, poisoned_cache, tmp_path / "b")):
        res = tune(manifest, _caches(cache_root), "ae-cat", 4, train=TrainConfig(max_epochs=3), runs_root=runs,
                   seeds=1, sampler_seed=3, cv=3, **QUIET)
        study = optuna.load_study(study_name=res.study_name, storage=journal_storage(res.storage))
        results.append((res, study.trials))
    (clean, trials), (poisoned, poisoned_trials) = results
    assert [(t.state, t.value, t.params) for t in trials] == [(t.state, t.value, t.params) for t in poisoned_trials]
    assert clean.study_name.startswith("ae-cat-cv3-") and clean.best_value == poisoned.best_value

    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert complete
    pooled = {f"p{i}" for i in range(N_TRAIN + N_DEV)}
    for t in complete:
        seed_dir = Path(t.user_attrs["run"])
        assert seed_dir.name == "seed-0" and "-cv3-" in seed_dir.parent.name
        assert t.value == pytest.approx(_oof_weighted_f1(seed_dir, 3), abs=1e-12)
        held = [json.loads((seed_dir / f"fold-{k}" / "config.json").read_text())["spec"] for k in range(3)]
        assert [(h["cv_folds"], h["cv_fold"], h["cv_seed"]) for h in held] == [(3, k, 0) for k in range(3)]
        # the pruner saw fold 0's per-epoch held-out scores, epochs 1..
        history = [json.loads(x) for x in (seed_dir / "fold-0" / "history.jsonl").read_text().splitlines()]
        assert t.intermediate_values == {h["epoch"]: h["dev_weighted_f1"] for h in history if "epoch" in h}
    # the out-of-fold rows are exactly the labeled train+dev rows: no test row is ever scored
    from msa_cache.fit.cv import cv_predictions
    _, preds = cv_predictions([clean.best_run / f"fold-{k}" for k in range(3)])
    assert sorted(preds["dev"].ids) == sorted(pooled)
    # the best config over --seeds is the same cross-validation (seed 0: the best trial's folds, read back)
    assert [r.path for r in clean.seed_results] == [clean.best_run] and clean.seed_results[0].skipped
    assert clean.seed_results[0].metrics["dev"]["weighted_f1"] == clean.best_value

    # the reproduce command is `fit --cv 3`, which finds every fold finished; --refit trains the final model
    assert " --cv 3 " in clean.fit_command and "--cv-seed" not in clean.fit_command
    assert clean.refit_command.endswith("--cv 3 --refit --seed 0")
    r = CliRunner().invoke(cli, shlex.split(clean.fit_command)[1:])
    assert r.exit_code == 0 and r.output.count("skipped (finished)") == 3, r.output
    assert str(clean.best_run) in r.output


def test_cv_and_plain_studies_never_share_a_journal(world, tmp_path):
    manifest, cache_root = world
    names = {}
    for label, kw in (("plain", {}), ("cv3", dict(cv=3)), ("cv3-seed1", dict(cv=3, cv_seed=1)),
                      ("cv2", dict(cv=2))):
        res = tune(manifest, _caches(cache_root), "ae-cat", 1, train=TrainConfig(max_epochs=1), runs_root=tmp_path,
                   seeds=1, sampler_seed=0, **kw, **QUIET)
        names[label] = (res.study_name, res.storage)
    assert len({n for n, _ in names.values()}) == 4 and len({s for _, s in names.values()}) == 4
    assert not names["plain"][0].startswith("ae-cat-cv") and names["cv3-seed1"][0].startswith("ae-cat-cv3-")
    seed1 = tune(manifest, _caches(cache_root), "ae-cat", 1, train=TrainConfig(max_epochs=1), runs_root=tmp_path,
                 seeds=1, cv=3, cv_seed=1, **QUIET)
    assert "--cv 3 --cv-seed 1 --seed 0" in seed1.fit_command
    with pytest.raises(ValueError, match="fewer labeled train\\+dev rows than folds"):
        tune(manifest, _caches(cache_root), "ae-cat", 1, runs_root=tmp_path, cv=200, **QUIET)


def test_a_cv_trial_pruned_in_fold_0_leaves_no_run_directory(world, tmp_path):
    """The pruner stops a CV trial inside fold 0: no fold runs, no empty folders."""
    manifest, cache_root = world
    from msa_cache.manifest import read_manifest
    from msa_cache.fit.features import open_features

    features = open_features(read_manifest(manifest), _caches(cache_root), text_pool="cls")
    base = RunSpec(str(manifest), {k: str(v) for k, v in _caches(cache_root).items()}, "ae-cat", {},
                   TrainConfig(max_epochs=4, monitor="weighted-f1"), 0, cv_folds=3)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    lines = []
    _run_trial(optuna, study, trial, base, search_space("ae-cat"), features, tmp_path, "weighted_f1", 1,
               "3-fold out-of-fold", lines.append)
    done = study.trials[0]
    assert done.state.name == "PRUNED" and list(done.intermediate_values) == [1]
    assert "pruned at epoch 1: fold 0 held-out" in lines[0]
    assert not [p for p in tmp_path.rglob("*") if p.name != "toy"], list(tmp_path.rglob("*"))


def test_cv_refit_trains_each_seeds_final_model(world, tmp_path):
    manifest, cache_root = world
    res = tune(manifest, _caches(cache_root), "ae-cat", 1, train=TrainConfig(max_epochs=2), runs_root=tmp_path,
               seeds=2, sampler_seed=0, cv=3, refit=True, **QUIET)
    assert res.fit_command.endswith("--cv 3 --refit --seed 0 --seed 1") and res.refit_command is None
    assert [p.parent.name for p in res.refits] == ["seed-0", "seed-1"]
    assert all((p / "metrics.json").is_file() and p.name.startswith("refit-") for p in res.refits)
    bad = CliRunner().invoke(cli, ["tune", "--head", "ae-cat", "--trials", "1", "--refit", "--manifest", str(manifest),
                                   "--cache-root", str(cache_root), "--runs", str(tmp_path)])
    assert bad.exit_code != 0 and "--refit goes with --cv K" in bad.output
