"""`--config FILE` (YAML or JSON) on extract, fit, compare, tune and finetune, and the round trip:
a run's command.yaml or config.json fed back as --config gives the same run directory (skipped)."""
import json
import re
import shlex

import pytest
import yaml
from click.testing import CliRunner

from msa_cache.train.command import command_line, command_options
from msa_cache_cli.main import main as cli

from test_runs import world  # noqa: F401  (the toy manifest + text and image caches, module-scoped)


def _common(world, tmp_path):
    root, manifest, _ = world
    return {"manifest": str(manifest), "cache_root": str(root / "cache"), "runs": str(tmp_path)}


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _run(args):
    return CliRunner().invoke(cli, args)


def _run_dir(output: str) -> str:
    """The run directory `fit` printed: `<path>  (trained in ...|already finished, skipped)`."""
    return next(line.split("  (")[0] for line in output.splitlines() if "  (" in line and "seed-" in line)


def test_fit_round_trip_through_command_yaml_and_config_json(world, tmp_path):
    cfg = _write(tmp_path / "fit.yaml", {**_common(world, tmp_path), "head": "ae-add", "latent": 8, "max-epochs": 2,
                                         "patience": 1, "seed": 1, "text_pool": "mean", "amp": False})
    first = _run(["fit", "--config", cfg])
    assert first.exit_code == 0, first.output
    run = _run_dir(first.output)
    assert "trained in" in first.output and run.endswith("seed-1") and "ae-add-latent8-" in run
    config = json.loads(open(f"{run}/config.json").read())
    assert config["spec"]["train"]["max_epochs"] == 2 and config["spec"]["train"]["text_pool"] == "mean"
    assert config["spec"]["train"]["amp"] is False and config["runs"] == str(tmp_path)

    # command.yaml: every option of the command that reproduces this seed's run
    text = open(f"{run}/command.yaml").read()
    assert text.startswith("# msa-cache fit --config command.yaml")
    saved = yaml.safe_load(text)
    assert saved == command_options(config)
    assert saved["head"] == "ae-add" and saved["latent"] == 8 and saved["seed"] == [1] and saved["runs"] == str(tmp_path)
    assert saved["text_cache"] == "toytext" and saved["image_cache"] == "toyimage"
    for source in (f"{run}/command.yaml", f"{run}/config.json"):
        again = _run(["fit", "--config", source])
        assert again.exit_code == 0, again.output
        assert f"{run}  (already finished, skipped)" in again.output and "epoch" not in again.output
    # the one-line form (model cards) reproduces it too
    line = command_line(config)
    assert line.startswith("msa-cache fit --head ae-add --manifest ") and line.endswith("--seed 1")
    again = _run(shlex.split(line)[1:])
    assert again.exit_code == 0 and f"{run}  (already finished, skipped)" in again.output

    # a flag on the command line overrides the file: another run, the file's other values kept
    other = _run(["fit", "--config", f"{run}/config.json", "--latent", "4"])
    assert other.exit_code == 0, other.output
    other_run = _run_dir(other.output)
    assert "trained in" in other.output and "ae-add-latent4-" in other_run and other_run.endswith("seed-1")
    other_spec = json.loads(open(f"{other_run}/config.json").read())["spec"]
    assert other_spec["head_options"]["latent"] == 4 and other_spec["train"]["max_epochs"] == 2
    # a repeatable flag given on the command line replaces the file's list
    seeds = _run(["fit", "--config", f"{run}/command.yaml", "--seed", "1", "--seed", "2", "--max-epochs", "1"])
    assert seeds.exit_code == 0 and seeds.output.count("seed-") == 2, seeds.output


def test_bad_config_files_are_one_line_errors(world, tmp_path):
    common = _common(world, tmp_path)
    cases = {
        "unknown": ({"head": "ae-cat", "latnt": 8}, "unknown key 'latnt'", "did you mean 'latent'"),
        "range": ({"head": "ae-cat", "max_epochs": 0}, "bad value for key 'max_epochs'", "0 is not in the range"),
        "type": ({"head": "ae-cat", "lr": "fast"}, "bad value for key 'lr'", "'fast' is not a valid float"),
        "choice": ({"head": "nope"}, "bad value for key 'head'", "'nope' is not one of"),
        "list": ({"head": "ae-cat", "lr": [0.1, 0.2]}, "key 'lr' takes one value, not a list", ""),
        "twice": ({"head": "ae-cat", "max_epochs": 2, "max-epochs": 3}, "set the same option", ""),
    }
    for name, (data, what, detail) in cases.items():
        r = _run(["fit", "--config", _write(tmp_path / f"{name}.yaml", {**common, **data})])
        assert r.exit_code == 2, (name, r.output)
        [line] = r.output.strip().splitlines()
        assert line.startswith("error: ") and what in line and f"({tmp_path / name}.yaml)" in line, line
        assert detail in line, line
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.yaml").write_text("head: [ae-cat\n")
    (tmp_path / "empty.yaml").write_text("")
    for name, what in (("list.json", "holds a list, not a mapping"), ("broken.yaml", "is not valid YAML or JSON"),
                       ("empty.yaml", "config file is empty"), ("missing.yaml", "no such config file")):
        r = _run(["fit", "--config", str(tmp_path / name)])
        assert r.exit_code == 2 and r.output.startswith("error: ") and what in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("toy"))  # nothing trained


def test_a_fine_tune_runs_config_is_refused_by_fit(world, tmp_path):
    fake = {"mode": "finetune", "classes": ["a", "b"], "encoders": {"text": {"encoder": "minilm"}},
            "spec": {"manifest": "m.parquet", "head": "late", "encoders": ["minilm"], "train": {}, "seed": 0}}
    (tmp_path / "config.json").write_text(json.dumps(fake))
    r = _run(["fit", "--config", str(tmp_path / "config.json")])
    assert r.exit_code == 2 and "a `finetune` run's config.json given to `msa-cache fit`" in r.output
    assert "msa-cache finetune --config" in r.output


def test_compare_takes_a_grid_file_and_reports_run_k_of_n(world, tmp_path):
    grid = _write(tmp_path / "grid.yaml", {**_common(world, tmp_path), "heads": ["uni-text", "ae-add"],
                                           "latent": [4, 8], "seeds": 1, "max_epochs": 2})
    r = _run(["compare", "--config", grid])
    assert r.exit_code == 0, r.output
    assert "| ae-add latent=4 | 1 |" in r.output and "| ae-add latent=8 | 1 |" in r.output
    steps = [line for line in r.output.splitlines() if line.startswith("run ")]
    assert [line.split("  ")[0] for line in steps] == ["run 1/3", "run 2/3", "run 3/3"]
    # the ETA: the trained runs' mean seconds times the runs left; none at the end
    assert re.search(r"\[\d+\.\ds\]  ETA \dm\d\ds  ", steps[0]) and "ETA" not in steps[-1], steps
    # the command line wins over the file: --heads narrows the grid; finished runs are skipped, not timed
    again = _run(["compare", "--config", grid, "--heads", "ae-add"])
    assert again.exit_code == 0, again.output
    lines = [line for line in again.output.splitlines() if line.startswith("run ")]
    assert len(lines) == 2 and all("skipped (finished)" in line and "ETA" not in line for line in lines)


def test_extract_and_tune_accept_their_keys(world, tmp_path, monkeypatch):
    import msa_cache.extract as extract_api  # the command imports `extract` from here when it runs

    root, manifest, _ = world
    seen = {}

    class Report:
        def summary(self):
            return "done"

    def fake_extract(manifest_path, encoders, out, **options):
        seen.update(manifest=manifest_path, encoders=encoders, out=out, **options)
        return Report()

    monkeypatch.setattr(extract_api, "extract", fake_extract)
    monkeypatch.setattr("msa_cache.extract.precheck.refuse_before_loading", lambda *args, **kwargs: None)
    cfg = _write(tmp_path / "extract.yaml", {"manifest": str(manifest), "encoder": ["minilm", "efficientnet-lite0"],
                                             "out": str(tmp_path / "c"), "max_length": 32, "layers": [-1, -2],
                                             "pooled-only": True, "batch_size": 4})
    r = _run(["extract", "--config", cfg, "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert seen["encoders"] == ["minilm", "efficientnet-lite0"] and seen["out"] == str(tmp_path / "c")
    assert seen["max_length"] == 32 and seen["layers"] == (-1, -2) and seen["pooled_only"] is True
    assert seen["batch_size"] == 8  # the command line wins
    bad = _run(["extract", "--config", _write(tmp_path / "e2.yaml", {"encoders_": ["minilm"]})])
    assert bad.exit_code == 2 and "keys of `msa-cache extract` are" in bad.output and "encoder" in bad.output

    tune = _write(tmp_path / "tune.yaml", {"head": "ae-cat", "trials": 5, "dry_run": True, "latent": 32, "lr": 1e-3})
    r = _run(["tune", "--config", tune])
    assert r.exit_code == 0, r.output
    assert "search space of ae-cat" in r.output and "fixed: latent, lr" in r.output


def test_command_options_of_cv_refit_and_fine_tune_specs():
    base = {"classes": ["a", "b"], "runs": "runs"}
    fit = {**base, "spec": {"manifest": "m.parquet", "caches": {"text": "cache/m/t", "image": "cache/m/i"},
                            "head": "late", "head_options": {"hidden": 8, "dropout": 0.1},
                            "train": {"lr": None, "max_epochs": 3, "amp": True}, "seed": 2,
                            "cv_folds": 5, "cv_fold": 3, "cv_seed": 1, "refit": {"epochs": 4}}}
    opts = command_options(fit)
    assert opts == {"head": "late", "manifest": "m.parquet", "cache_root": "cache", "text_cache": "t",
                    "image_cache": "i", "runs": "runs", "max_epochs": 3, "amp": True, "hidden": 8, "dropout": 0.1,
                    "cv": 5, "cv_seed": 1, "refit": True, "seed": [2]}
    assert command_line(fit).endswith("--amp --hidden 8 --dropout 0.1 --cv 5 --cv-seed 1 --refit --seed 2")
    split = {**fit, "spec": {**fit["spec"], "caches": {"text": "a/m/t", "image": "b/m/i"}}}
    with pytest.raises(ValueError, match="different roots"):
        command_options(split)
    ft = {**base, "mode": "finetune", "spec": {"manifest": "m.parquet", "head": "late", "encoders": ["minilm", "my dir"],
                                               "baseline": None, "head_options": {},
                                               "train": {"unfreeze": [], "augment": False}, "seed": 0}}
    assert command_options(ft) == {"head": "late", "encoder": ["minilm", "my dir"], "manifest": "m.parquet",
                                   "runs": "runs", "unfreeze": "none", "augment": False, "seed": [0]}
    assert command_line(ft) == ("msa-cache finetune --head late --encoder minilm --encoder 'my dir' --manifest "
                                "m.parquet --runs runs --unfreeze none --no-augment --seed 0")
    vb = {**ft, "spec": {**ft["spec"], "head": "visualbert", "baseline": "visualbert", "encoders": ["uclanlp/v", "vit"]}}
    assert command_line(vb).startswith("msa-cache finetune --baseline visualbert --model uclanlp/v --encoder vit ")
