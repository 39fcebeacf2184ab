"""Issue 13, one test per class of failure (the table of bad invocations is tests/test_hostile.py):
stale results are never reused, names cannot leave their folder, odd images and texts decode
right, and every error is one line (a traceback only with --debug / MSA_CACHE_DEBUG=1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from msa_cache.errors import UserError
from msa_cache.manifest import read_manifest
from msa_cache.manifest.build import build_manifest
from msa_cache.manifest.images import DRAFT_SIDE, check_image, load_rgb
from msa_cache.names import check_name
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.features import open_features
from msa_cache.train.rundir import finished_seeds, stale_tmp_dirs, sweep_stale_tmp
from msa_cache.fit.trainer import fit_run, plan_run
from msa_cache_cli.main import main as cli

from worlds import extract_small, small_rows, write_small_manifest


@pytest.fixture()
def world(tmp_path):
    manifest = write_small_manifest(tmp_path, "toy", small_rows())
    extract_small(tmp_path, manifest)
    caches = {"text": tmp_path / "cache/toy/toytext", "image": tmp_path / "cache/toy/toyimage"}
    return tmp_path, manifest, caches


def _spec(manifest, caches):
    return RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, "uni-text", {},
                   TrainConfig(max_epochs=1, batch_size=16), 0)


# -- class 1: stale results -----------------------------------------------------------------------

def test_stale_manifest_is_refused_not_trained_on(world):
    root, manifest, caches = world
    rows = small_rows()
    rows[5]["text"] = "edited after extraction"  # same ids: only the fingerprint tells
    write_small_manifest(root, "toy", rows)
    with pytest.raises(UserError, match="stale cache: manifest toy changed since extraction"):
        open_features(read_manifest(manifest), caches)
    with pytest.raises(UserError):
        fit_run(_spec(manifest, caches), root / "runs", log=lambda m: None)
    assert not (root / "runs").exists()


def test_relabeled_manifest_reuses_the_features_but_not_the_runs(world):
    """Labels and splits do not change features: a cache stays usable after a label fix (its inputs'
    fingerprint matches), while the run, whose identity hashes the whole manifest, is new."""
    root, manifest, caches = world
    first = fit_run(_spec(manifest, caches), root / "runs", log=lambda m: None)
    rows = small_rows()
    rows[0]["label"] = (rows[0]["label"] + 1) % 3
    write_small_manifest(root, "toy", rows)
    again = fit_run(_spec(manifest, caches), root / "runs", log=lambda m: None)
    assert not again.skipped and again.path != first.path


def test_run_identity_covers_extraction_settings(world):
    """Re-extracting a cache with another max length (or cleaning, dtype, ...) gives another run."""
    root, manifest, caches = world
    first = fit_run(_spec(manifest, caches), root / "runs", log=lambda m: None)
    assert not first.skipped
    assert fit_run(_spec(manifest, caches), root / "runs", log=lambda m: None).skipped
    index = caches["text"] / "index.json"
    data = json.loads(index.read_text())
    data["attrs"]["preprocessing"] = {**(data["attrs"]["preprocessing"] or {}), "max_length": 64, "clean": "seed000-v1"}
    index.write_text(json.dumps(data))
    features = open_features(read_manifest(manifest), caches)
    other = plan_run(_spec(manifest, caches), root / "runs", features)
    assert other != first.path  # a different identity: not "already finished, skipped"
    assert features.cache_fingerprints()["text"]["settings"]["preprocessing"]["max_length"] == 64
    # the shard size only splits the same rows into files: same identity
    data["attrs"]["shard_size"] = 999
    index.write_text(json.dumps(data))
    assert plan_run(_spec(manifest, caches), root / "runs", open_features(read_manifest(manifest), caches)) == other


def test_only_finished_renamed_runs_count_and_stale_tmp_are_swept(tmp_path):
    family = tmp_path / "late-0123456789"
    for name, marker in (("seed-0", True), ("seed-10", True), ("seed-2", False), ("seed-1.tmp-999999", True),
                         (f"seed-3.tmp-{os.getpid()}", False), ("seed-x", True)):
        (family / name).mkdir(parents=True)
        if marker:
            (family / name / "metrics.json").write_text("{}")
    assert [p.name for p in finished_seeds(family)] == ["seed-0", "seed-10"]  # by seed number
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (family / f"seed-4.tmp-{dead.pid}").mkdir()
    stale = {p.name for p in stale_tmp_dirs(family)}
    assert stale == {"seed-1.tmp-999999", f"seed-4.tmp-{dead.pid}"}  # the live process's folder stays
    sweep_stale_tmp(family)
    assert not (family / "seed-1.tmp-999999").exists() and (family / f"seed-3.tmp-{os.getpid()}").exists()


# -- class 2: paths -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "../x", "a\\b", "x\0y", "a" * 300])
def test_check_name_refuses_what_is_not_one_folder(name):
    with pytest.raises(UserError):
        check_name(name, "name")


@pytest.mark.parametrize("name", ["mvsa-single", "toy.v2", "...a", "x_y"])
def test_check_name_keeps_plain_names(name):
    assert check_name(name) == name


def test_overlong_image_path_is_a_bad_row(tmp_path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "img" / "ok.png")
    long_name = "img/" + "x" * 5000 + ".jpg"
    rows = [("a", "img/ok.png", "pos", "train"), ("b", long_name, "neg", "train"), ("c", "img/ok.png", "neg", "dev")]
    (data / "t.csv").write_text("id,text,image,label,split\n" + "".join(f"{i},hi,{p},{lab},{s}\n" for i, p, lab, s in rows))
    summary = build_manifest("table", data, tmp_path / "m.parquet", file="t.csv")
    man = read_manifest(summary.path if hasattr(summary, "path") else tmp_path / "m.parquet")
    bad = {r["id"]: r["problem"] for r in man.bad_rows()}
    assert list(bad) == ["b"] and "image path unusable" in bad["b"] and len(bad["b"]) < 300


# -- class 3: inputs decoded right and bounded ----------------------------------------------------

def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert rgb.shape == (16, 256, 3)
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255
    assert abs(int(rgb[0, 128, 0]) - 128) <= 2  # mid-grey stays mid-grey (convert("RGB") gives 255)
    assert np.all(np.diff(rgb[0, :, 0].astype(int)) >= 0)


def test_huge_jpeg_is_decoded_reduced(tmp_path):
    Image.new("RGB", (5000, 4000), (10, 200, 30)).save(tmp_path / "big.jpg", quality=50)
    assert check_image(tmp_path / "big.jpg") == (True, "")
    img = load_rgb(tmp_path / "big.jpg")
    assert DRAFT_SIDE <= min(img.size) < 4000 and img.mode == "RGB"


def test_huge_non_jpeg_is_flagged_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    for size in ((150, 100), (200, 200)):  # over the limit (our check), over twice the limit (PIL's)
        Image.new("RGB", size).save(tmp_path / "wide.png")
        ok, problem = check_image(tmp_path / "wide.png")
        assert not ok and "image too large: wide.png" in problem


def test_lone_surrogate_in_text_is_flagged_not_fatal(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "a.png")
    lines = [{"id": "a", "text": "fine", "image": "a.png", "label": "pos", "split": "train"},
             {"id": "b", "text": "half an emoji \ud83d here", "image": "a.png", "label": "neg", "split": "train"}]
    (data / "t.jsonl").write_text("\n".join(json.dumps(r) for r in lines))  # json escapes the surrogate
    build_manifest("table", data, tmp_path / "m.parquet", file="t.jsonl")
    man = read_manifest(tmp_path / "m.parquet")
    texts = dict(zip(man.ids, man.column("text")))
    assert texts["b"] == "half an emoji \ufffd here"
    assert [r["id"] for r in man.bad_rows()] == ["b"]


# -- class 4 (options) is the table in test_hostile.py; class 5: structural --------------------

def test_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("MSA_CACHE_DEBUG", raising=False)
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["cache", "info", str(tmp_path / "empty")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["manifest", "info", str(tmp_path / "nope.parquet")])
    assert r.exit_code == 2 and r.output.startswith("error: ")
    r = CliRunner().invoke(cli, ["--debug", "manifest", "info", str(tmp_path / "nope.parquet")])
    assert isinstance(r.exception, UserError)  # re-raised: click's runner would print its traceback


def test_unexpected_error_is_one_line_unless_debugging(tmp_path, monkeypatch):
    import msa_cache_cli.cache as cache_cli

    def boom(path):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(cache_cli, "cache_info", boom)
    monkeypatch.delenv("MSA_CACHE_DEBUG", raising=False)
    r = CliRunner().invoke(cli, ["cache", "info", str(tmp_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip() == ("error: unexpected error (RuntimeError: a bug over two lines); rerun with --debug "
                                "(or MSA_CACHE_DEBUG=1) for the traceback and report it")
    monkeypatch.setenv("MSA_CACHE_DEBUG", "1")
    r = CliRunner().invoke(cli, ["cache", "info", str(tmp_path)])
    assert isinstance(r.exception, RuntimeError)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"batch_size": -1}, {"max_epochs": 0}, {"patience": -1},
                                 {"lr": 0.0}, {"lr": float("nan")}, {"weight_decay": -1.0}, {"monitor": "loss"},
                                 {"text_pool": "max"}, {"workers": -2}])
def test_api_refuses_train_settings_that_cannot_train(bad):
    """The same ranges as the CLI, for notebook users (--batch-size -1 used to write a finished run)."""
    with pytest.raises(ValueError):
        TrainConfig(**bad)


@pytest.mark.parametrize("head,options", [("ae-cat", {"latent": 10 ** 12}), ("ae-cat", {"latent": 0}),
                                          ("mha", {"width": "64"}), ("late", {"dropout": 1.0}),
                                          ("mdse", {"tau": 0.0}), ("infig", {"momentum": 1.5}),
                                          ("ae-cat", {"lambda_ce": float("inf")})])
def test_api_refuses_head_options_out_of_range(head, options):
    from msa_cache.heads import make_config

    with pytest.raises(ValueError, match="head"):
        make_config(head, options)
