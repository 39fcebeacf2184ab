"""Model cards and `msa-cache export`: every new run (cached and fine-tuned) has a README.md in the Hugging
Face model-card format with its scores in the model-index; an exported folder predicts exactly what the
run predicts (also for an older run with model.pt, no card and no encoder records); export is atomic,
refuses a non-empty folder, and --push goes through HfApi (monkeypatched: no network)."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard

from msa_cache.train.command import command_line
from msa_cache.extract import extract
from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.study.share import export_run
from msa_cache.fit.trainer import fit_run
from msa_cache_cli.main import main

from test_finetune import make_world

QUIET = {"shard_size": 16, "batch_size": 4, "workers": 0, "progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    return make_world(tmp_path_factory.mktemp("share"), tokenizer)


@pytest.fixture(scope="module")
def cached_run(world):
    root, manifest, bert, vit = world
    extract(manifest, [str(bert), str(vit)], root / "cache", max_length=12, clean="seed000-v1", **QUIET)
    caches = {"text": str(root / "cache/toy/path-tiny-bert"), "image": str(root / "cache/toy/path-tiny-vit")}
    spec = RunSpec(str(manifest), caches, "mha", {"width": 16, "num_heads": 2},
                   TrainConfig(max_epochs=3, batch_size=8), 0)
    return fit_run(spec, root / "runs", log=lambda m: None).path


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _predict(run, manifest, out):
    r = _cli("predict", run, "--manifest", manifest, "-o", out)
    assert r.exit_code == 0, r.output
    return pq.read_table(out).to_pydict()


def _assert_same(got, want):
    assert got["id"] == want["id"] and got["pred"] == want["pred"]
    probs = [k for k in want if k.startswith("prob_")]
    np.testing.assert_allclose(np.array([got[k] for k in probs]), np.array([want[k] for k in probs]), atol=1e-6)


def test_cached_run_has_a_model_card(cached_run):
    config = json.loads((cached_run / "config.json").read_text())
    metrics = json.loads((cached_run / "metrics.json").read_text())
    card = ModelCard.load(cached_run / "README.md")
    data = card.data
    assert data.library_name == "msa-cache" and data.datasets == ["toy"]
    assert {"multimodal", "sentiment-analysis", "mha"} <= set(data.tags)
    got = {(r.dataset_split, r.metric_name): r.metric_value for r in data.eval_results}
    want = {(s, f"{s} {n}"): round(metrics[s][k], 6) for s in ("dev", "test")
            for k, n in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("weighted_f1", "weighted-F1"))}
    assert got == want  # the toy world's test split is labeled: both splits, said which
    body = card.text
    for role, rec in config["encoders"].items():
        assert rec["weights_sha256"] in body and rec["model_id"] in body
    assert "max_length=12, clean=seed000-v1" in body
    assert "seed 002: multi-head attention fusion" in body  # the head's paper
    assert command_line(config) in body and "msa-cache fit --config RUN/config.json" in body
    assert '"num_heads": 2' in body
    assert f"| dev | {metrics['dev']['accuracy']:.4f} |" in body


def test_export_predicts_like_the_run(world, cached_run, tmp_path):
    root, manifest, bert, vit = world
    out = tmp_path / "hub" / "mha"
    r = _cli("export", cached_run, out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "command.yaml", "config.json", "confusion.png", "history.jsonl", "metrics.json", "model.safetensors"])
    assert not list(out.parent.glob("*.tmp-*"))
    assert (out / "README.md").read_text() == (cached_run / "README.md").read_text()
    _assert_same(_predict(out, manifest, tmp_path / "a.parquet"),
                 _predict(cached_run, manifest, tmp_path / "b.parquet"))

    # A non-empty folder is refused in one line, and left as it was.
    r = _cli("export", cached_run, out)
    assert r.exit_code == 2 and r.output.startswith("error: the export folder exists and is not empty")
    assert len(r.output.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()  # an empty one is fine
    assert _cli("export", cached_run, tmp_path / "empty").exit_code == 0


def test_export_of_an_older_run_converts_model_pt_and_writes_its_card(world, cached_run, tmp_path):
    """A run made before safetensors, cards and encoder records in config.json."""
    import shutil

    from safetensors.torch import load_file

    root, manifest, bert, vit = world
    old = tmp_path / "old" / "seed-0"
    shutil.copytree(cached_run, old)
    state = load_file(old / "model.safetensors")
    torch.save(state, old / "model.pt")
    (old / "model.safetensors").unlink()
    (old / "README.md").unlink()
    config = json.loads((old / "config.json").read_text())
    del config["encoders"]
    (old / "config.json").write_text(json.dumps(config))

    out = export_run(old, tmp_path / "export", log=lambda m: None)
    assert not (out / "model.pt").exists()
    for k, v in load_file(out / "model.safetensors").items():
        assert torch.equal(v, state[k])
    exported = json.loads((out / "config.json").read_text())
    assert exported["encoders"]["text"]["preprocessing"]["max_length"] == 12  # from the cache's provenance
    assert ModelCard.load(out / "README.md").data.library_name == "msa-cache"
    _assert_same(_predict(out, manifest, tmp_path / "a.parquet"),
                 _predict(cached_run, manifest, tmp_path / "b.parquet"))

    # `msa-cache card` (re)writes an older run's card in place.
    r = _cli("card", old)
    assert r.exit_code == 0, r.output
    card = ModelCard.load(old / "README.md")
    assert card.data.eval_results and config["caches"]["text"]["weights"] in card.text


def test_fine_tuned_run_card_and_export(world, tmp_path):
    root, manifest, bert, vit = world
    spec = FinetuneSpec(str(manifest), "late", [str(bert), str(vit)], None, {},
                        FinetuneConfig(max_epochs=2, head_epochs=1, batch_size=8, max_length=12))
    run = finetune_run(spec, tmp_path / "runs", log=lambda m: None).path
    body = (run / "README.md").read_text()
    config = json.loads((run / "config.json").read_text())
    assert command_line(config) in body and "msa-cache finetune --config RUN/config.json" in body
    assert "fine-tuned" in body
    for rec in config["encoders"].values():
        assert rec["weights_sha256"] in body
    out = export_run(run, tmp_path / "export", log=lambda m: None)
    _assert_same(_predict(out, manifest, tmp_path / "a.parquet"), _predict(run, manifest, tmp_path / "b.parquet"))


def test_push_calls_the_hub_api(cached_run, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw["repo_id"], kw))
            return type("CommitInfo", (), {"commit_url": f"https://hub.example/{kw['repo_id']}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "push"
    r = _cli("export", cached_run, out, "--push", "me/msa-mha")
    assert r.exit_code == 0, r.output
    assert calls[0] == ("create_repo", "me/msa-mha", {"repo_type": "model", "private": False, "exist_ok": True})
    assert calls[1][1] == "me/msa-mha" and calls[1][2]["folder_path"] == str(out)
    assert "pushed to me/msa-mha: https://hub.example/me/msa-mha/commit/1" in r.output

    # A bad repo id fails before any work: nothing is written.
    r = _cli("export", cached_run, tmp_path / "never", "--push", "not a/valid//id")
    assert r.exit_code == 2 and "not a valid Hub repo id" in r.output and not (tmp_path / "never").exists()


def test_refuses_an_unfinished_run(cached_run, tmp_path):
    r = _cli("export", tmp_path, tmp_path / "out")
    assert r.exit_code == 2 and "not a finished run directory" in r.output and not (tmp_path / "out").exists()


def test_card_metadata_pipeline_base_model_optimiser_and_python_use(cached_run):
    card = ModelCard.load(cached_run / "README.md")
    config = json.loads((cached_run / "config.json").read_text())
    assert card.data.pipeline_tag == "text-classification" and "nearest Hub task" in card.text
    # this world's encoders are local folders (path-tiny-bert, path-tiny-vit): no Hub id to name
    assert card.data.base_model is None and "Hub base models (`base_model`): none" in card.text
    assert card.data.license is None and "License: none stated." in card.text
    assert f"- optimiser: {config['optimizer']['optimizer']} (lr {config['optimizer']['lr']}" in card.text
    assert 'model = msa_cache.load("USER/REPO")' in card.text and "model.predict([" in card.text
    assert "```python" in card.text and "msa-cache predict . --text" in card.text


def test_base_models_are_hub_ids_only():
    from msa_cache.train.card import base_models, model_card

    def rec(encoder, model_id):
        return {"encoder": encoder, "model_id": model_id, "weights_sha256": "0" * 16}

    config = {"spec": {"manifest": "manifests/toy.parquet", "head": "late", "seed": 0, "train": {}},
              "classes": ["negative", "neutral", "positive"],
              "encoders": {"text": rec("minilm", "sentence-transformers/all-MiniLM-L6-v2"),
                           "image": rec("efficientnet-lite0", "efficientnet-lite0")}}
    # efficientnet-lite0's weights come from a pip package, not the Hub
    assert base_models(config) == ["sentence-transformers/all-MiniLM-L6-v2"]
    for text in (rec("bert", "/data/models/bert"), rec("bert", "in-memory"), rec("my-bert", "me/bert"),
                 rec("resnet50", "torchvision/resnet50")):
        assert base_models({**config, "encoders": {"text": text}}) == [], text
    assert base_models({**config, "encoders": {"text": rec("hf:me/bert", "me/bert")}}) == ["me/bert"]
    clip = {"text": rec("clip", "openai/clip-vit-base-patch32"), "image": rec("clip", "openai/clip-vit-base-patch32")}
    assert base_models({**config, "encoders": clip}) == ["openai/clip-vit-base-patch32"]
    card = model_card(config, {}, license="apache-2.0")
    data = ModelCard(card).data
    assert data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"] and data.license == "apache-2.0"
    assert "License: apache-2.0." in card


def test_export_license(cached_run, tmp_path):
    r = _cli("export", cached_run, tmp_path / "mit", "--license", "mit")
    assert r.exit_code == 0, r.output
    card = ModelCard.load(tmp_path / "mit" / "README.md")
    assert card.data.license == "mit" and "License: mit." in card.text
    own = ModelCard.load(cached_run / "README.md")  # the run's card, otherwise as it was
    assert card.text == own.text.replace("License: none stated.", "License: mit.")
    assert own.data.license is None
    r = _cli("export", cached_run, tmp_path / "bad", "--license", "MIT License")
    assert r.exit_code == 2 and "not a Hub license id" in r.output and not (tmp_path / "bad").exists()


def _evaluation(name: str, weighted_f1: float) -> dict:
    """An evaluation as `msa-cache evaluate` writes it (the fields a card reads)."""
    return {"format": 1, "name": name, "kind": "corruption",
            "corruption": {"side": "image", "type": "drop", "scale": None, "seed": 0},
            "run": {"path": "x", "family": "mha", "head": "mha", "seed": 0, "manifest": "toy"},
            "manifest": {"name": "toy", "path": "m.parquet", "fingerprint": "f"}, "class_map": None,
            "classes": ["a", "b"], "monitor": "weighted-f1",
            "splits": {"dev": {"n": 10, "accuracy": 0.5, "macro_precision": 0.5, "macro_recall": 0.5,
                               "macro_f1": 0.4, "weighted_f1": weighted_f1,
                               "interval": {"weighted_f1": [0.25, 0.75]}}}}


def test_card_lists_the_evaluations_and_export_keeps_them(cached_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cached_run, run)
    (run / "evals").mkdir()
    (run / "evals/image-drop.json").write_text(json.dumps(_evaluation("image-drop", 0.4321)))
    r = _cli("card", run)
    assert r.exit_code == 0, r.output
    card = (run / "README.md").read_text()
    section = card[card.index("## Evaluations"):card.index("## Training")]
    assert "| `image-drop` | image missing (the head's stand-in) | dev | 10 |" in section and "0.4321" in section
    assert "0.2500-0.7500" in section  # the monitor's interval
    out = tmp_path / "exported"
    r = _cli("export", run, out)
    assert r.exit_code == 0, r.output
    assert (out / "evals/image-drop.json").is_file() and "0.4321" in (out / "README.md").read_text()


@pytest.mark.parametrize("content", ["{not json", json.dumps([1]), json.dumps({**_evaluation("x", 0.5), "kind": "other"}), json.dumps({"name": "x", "kind": "clean"}),
                                     json.dumps({**_evaluation("x", 0.5), "splits": {"dev": {"weighted_f1": "hi"}}})])
def test_a_tampered_evaluation_is_one_line(cached_run, tmp_path, content):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cached_run, run)
    (run / "evals").mkdir()
    (run / "evals/bad.json").write_text(content)
    before = (run / "README.md").read_text()
    r = _cli("card", run)
    assert r.exit_code != 0
    assert r.output.startswith("error: evaluation") and "bad.json" in r.output and len(r.output.splitlines()) == 1
    assert (run / "README.md").read_text() == before  # nothing rewritten
