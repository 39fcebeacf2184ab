"""`predict` replays a run on new posts: a cached run through its recorded encoders (rebuilt from local
model folders with the recorded max_length and cleaning) and a fine-tuned run through its whole
model both reproduce the run's own predictions.parquet; an encoder that cannot be loaded, or loads
other weights, is refused with one line saying which."""
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from msa_cache.encoders import EncoderUnavailable, build_encoder
from msa_cache.extract import extract
from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run
from msa_cache.finetune.record import EncoderMismatch
from msa_cache.manifest import read_manifest
from msa_cache.predict import load_predictor, predict_manifest, predict_post
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run
from msa_cache_cli.predict import predict_cmd

from test_finetune import make_world, tiny_bert  # the same tiny world as the fine-tune tests

QUIET = {"shard_size": 16, "batch_size": 4, "workers": 0, "progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    return make_world(tmp_path_factory.mktemp("pred"), tokenizer)


def _fit(manifest, cache_root, runs, head, options, **caches):
    spec = RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, head, options,
                   TrainConfig(max_epochs=3, batch_size=8), 0)
    return fit_run(spec, runs, log=lambda m: None).path


@pytest.fixture(scope="module")
def cached_runs(world):
    """Caches extracted from the model folders with a non-default max_length and cleaning, and two runs."""
    root, manifest, bert, vit = world
    extract(manifest, [str(bert), str(vit)], root / "cache", max_length=12, clean="seed000-v1", **QUIET)
    caches = {"text": root / "cache/toy/path-tiny-bert", "image": root / "cache/toy/path-tiny-vit"}
    return {head: _fit(manifest, root / "cache", root / "runs", head, options, **caches)
            for head, options in (("ae-cat", {"latent": 8}), ("mha", {"width": 16, "num_heads": 2}))}


def _assert_same_as_run(table, run):
    want = pq.read_table(run / "predictions.parquet").to_pydict()
    got = table.to_pydict()
    assert got["id"] == want["id"] and got["label"] == want["label"]
    probs = [k for k in want if k.startswith("prob_")]
    np.testing.assert_allclose(np.array([got[k] for k in probs]), np.array([want[k] for k in probs]), atol=1e-5)
    assert got["pred"] == want["pred"]


@pytest.mark.parametrize("head", ["ae-cat", "mha"])  # pooled features; tokens + mask
def test_cached_run_predictions_are_reproduced(world, cached_runs, head):
    root, manifest, bert, vit = world
    run = cached_runs[head]
    predictor = load_predictor(run)
    text_encoder = next(e for e in predictor.encoders.values() if e.text is not None)
    assert (text_encoder.text.max_length, text_encoder.text.clean) == (12, "seed000-v1")  # the recorded ones
    _assert_same_as_run(predict_manifest(run, manifest, predictor=predictor), run)

    # One new post (here: row p4's text and image) gives that row's probabilities.
    man = read_manifest(manifest)
    one = predict_post(run, man.column("text")[4], str(man.image_path(man.column("image")[4])), predictor=predictor)
    want = pq.read_table(run / "predictions.parquet").slice(4, 1).to_pydict()
    assert one["class"] == man.classes[want["pred"][0]]
    assert abs(one["probs"]["positive"] - want["prob_positive"][0]) < 1e-4


def test_the_fields_a_head_reads_are_recorded_and_replayed(cached_runs):
    run = cached_runs["mha"]
    config = json.loads((run / "config.json").read_text())
    fields = config["fields"]  # cache.fields.head_fields' choice, recorded next to the identity's pair
    assert fields["text"] == {"pooled": config["caches"]["text"]["fields"][0], "tokens": "text/tokens",
                              "mask": "text/mask"}
    assert fields["image"] == {"pooled": "image/pooled", "tokens": "image/tokens", "mask": None}
    predictor = load_predictor(run)
    read = {m: v for g in predictor.groups.values() for m, v in g["modalities"].items()}
    assert read == {m: (f["pooled"], f["tokens"], f["mask"]) for m, f in fields.items()}


def test_fine_tuned_run_predictions_are_reproduced(world, tmp_path):
    root, manifest, bert, vit = world
    spec = FinetuneSpec(str(manifest), "mha", [str(bert), str(vit)], None, {"width": 16, "num_heads": 2},
                        FinetuneConfig(max_epochs=2, head_epochs=1, batch_size=8, max_length=12, clean="seed000-v1"))
    run = finetune_run(spec, tmp_path, log=lambda m: None).path
    out = tmp_path / "preds.parquet"
    r = CliRunner().invoke(predict_cmd, [str(run), "--manifest", str(manifest), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert f"wrote {len(read_manifest(manifest))} rows" in r.output and "dev   accuracy" in r.output
    _assert_same_as_run(pq.read_table(out), run)

    man = read_manifest(manifest)
    r = CliRunner().invoke(predict_cmd, [str(run), "--text", man.column("text")[7], "--json",
                                         "--image", str(man.image_path(man.column("image")[7]))])
    assert r.exit_code == 0, r.output
    want = pq.read_table(run / "predictions.parquet").slice(7, 1).to_pydict()
    assert abs(json.loads(r.stdout)["probs"]["negative"] - want["prob_negative"][0]) < 1e-4


def test_refuses_an_encoder_that_cannot_be_loaded(world, tokenizer, tmp_path):
    root, manifest, bert, vit = world
    # A cache made with an in-memory model under the registry name "bert": predict would need the
    # hub's bert-base-uncased, which is not here.
    in_memory = build_encoder("bert", model=tiny_bert(tokenizer), tokenizer=tokenizer, max_length=12)
    extract(manifest, [in_memory], tmp_path / "cache", **QUIET)
    run = _fit(manifest, tmp_path / "cache", tmp_path / "runs", "uni-text", {}, text=tmp_path / "cache/toy/bert")
    with pytest.raises(EncoderUnavailable, match=r"cannot load its encoder 'bert'.*bert-base-uncased"):
        load_predictor(run)
    r = CliRunner().invoke(predict_cmd, [str(run), "--text", "hello"])
    assert r.exit_code == 1 and "cannot load its encoder 'bert'" in r.output and "Traceback" not in r.output


def test_refuses_an_encoder_whose_weights_changed_or_vanished(world, tokenizer, tmp_path):
    root, manifest, bert, vit = world
    folder = tmp_path / "my-bert"
    shutil.copytree(bert, folder)
    extract(manifest, [str(folder)], tmp_path / "cache", max_length=12, **QUIET)
    run = _fit(manifest, tmp_path / "cache", tmp_path / "runs", "uni-text", {},
               text=tmp_path / "cache/toy/path-my-bert")
    assert predict_post(run, "a good day")["class"] in read_manifest(manifest).classes  # loads as recorded

    tiny_bert(tokenizer, seed=7).save_pretrained(folder)  # same folder, other weights
    with pytest.raises(EncoderMismatch, match=r"sha256 \w+, not the recorded \w+"):
        load_predictor(run)
    shutil.rmtree(folder)
    with pytest.raises(EncoderUnavailable, match="model folder is gone"):
        load_predictor(run)


def test_cli_usage_errors(world, cached_runs, tmp_path):
    root, manifest, bert, vit = world
    run = str(cached_runs["ae-cat"])
    cases = [
        ([run], "give --text/--image"),
        ([run, "--text", "hi"], "uses an image encoder; pass --image"),
        ([run, "--text", "hi", "--image", str(manifest)], "cannot read it as an image"),
        ([run, "--text", "hi", "--manifest", str(manifest)], "leave out --text/--image"),
        ([str(tmp_path), "--text", "hi"], "not a finished run directory"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(predict_cmd, args)
        assert r.exit_code != 0 and message in (r.output + str(r.exception)), (args, r.output)
