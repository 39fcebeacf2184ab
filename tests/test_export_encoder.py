"""`export-encoder`: a fine-tuned run's encoder -> a model folder that `extract --encoder OUT` loads,
giving exactly the fine-tuned encoder's features, with the run id and weights hash in the cache's
provenance; bad requests are refused in one line and nothing is left behind."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from msa_cache.cache import open_cache
from msa_cache.encoders import EncoderUnavailable, build_encoder
from msa_cache.encoders.base import weights_sha256
from msa_cache.extract import extract
from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run, load_finetune_run
from msa_cache.finetune.data import PostCollator, PostDataset
from msa_cache.finetune.export import export_encoder
from msa_cache.manifest import read_manifest
from msa_cache_cli.main import main

from test_finetune import make_world

QUIET = {"shard_size": 16, "batch_size": 4, "workers": 0, "progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    return make_world(tmp_path_factory.mktemp("export"), tokenizer)


def _finetune(world, head, encoder, modality, pool="cls", **train):
    root, manifest, _, _ = world
    spec = FinetuneSpec(str(manifest), head, [str(encoder)], None, {"hidden": 16, "dropout": 0.0},
                        FinetuneConfig(max_epochs=1, head_epochs=0, batch_size=8, max_length=12,
                                       unfreeze=[modality], text_pool=pool, augment=False, encoder_lr=1e-3, **train))
    return finetune_run(spec, root / "runs", log=lambda m: None).path


@pytest.fixture(scope="module")
def text_run(world):
    return _finetune(world, "uni-text", world[2], "text", pool="mean")


def _tuned_pooled(run, modality) -> np.ndarray:
    """The fine-tuned encoder's pooled feature of every manifest row, computed by the run's own model."""
    model, config = load_finetune_run(run, json.loads((run / "config.json").read_text()))
    manifest = read_manifest(config["spec"]["manifest"])
    specs = model.input_specs()
    ds = PostDataset(manifest, np.arange(len(manifest)), specs)
    batch = PostCollator(specs, True)([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        return model.head_batch(batch).inputs[modality].pooled.numpy()


def test_exported_text_encoder_extracts_the_fine_tuned_features(world, text_run, tmp_path):
    root, manifest, bert, _ = world
    out = tmp_path / "minilm-ft"
    info = export_encoder(text_run, out, "text", log=lambda m: None)
    src = info["source"]
    assert src["run_id"].endswith(text_run.parent.name + "/seed-0") and text_run.parent.name.endswith(
        src["run_config_hash"])
    base = build_encoder(str(bert), max_length=12)
    assert src["base_weights_sha256"] == base.weights_sha256 != src["weights_sha256"]  # it was fine-tuned

    extract(manifest, [str(out)], tmp_path / "cache", max_length=12, **QUIET)
    cache = open_cache(tmp_path / "cache/toy/path-minilm-ft")
    assert cache.attrs["weights_sha256"] == src["weights_sha256"]
    assert cache.attrs["encoder_source"]["run_id"] == src["run_id"]
    assert cache.attrs["preprocessing"]["tokenizer"] == base.preprocessing()["tokenizer"]
    info_out = CliRunner().invoke(main, ["cache", "info", str(tmp_path / "cache/toy/path-minilm-ft")]).output
    assert f"fine-tuned in run {src['run_id']} (uni-text, seed 0)" in info_out, info_out
    np.testing.assert_allclose(cache.read("text/mean"), _tuned_pooled(text_run, "text"), atol=2e-3, rtol=2e-3)


def test_exported_cnn_and_hf_image_encoders(world, tmp_path):
    root, manifest, _, vit = world
    for name, encoder in (("cnn", "cnn-small"), ("vit", vit)):
        run = _finetune(world, "uni-image", encoder, "image")
        out = tmp_path / f"{name}-ft"
        info = export_encoder(run, out, "image", log=lambda m: None)
        assert info["loader"] == ("state_dict" if name == "cnn" else "hf")
        loaded = build_encoder(str(out))
        assert loaded.weights_sha256 == info["weights_sha256"] and loaded.source["run_id"] == info["source"]["run_id"]
        extract(manifest, [str(out)], tmp_path / "cache", **QUIET)
        cache = open_cache(tmp_path / f"cache/toy/path-{name}-ft")
        np.testing.assert_allclose(cache.read("image/pooled"), _tuned_pooled(run, "image"), atol=3e-3, rtol=3e-3)


def test_changed_export_folder_is_refused(world, text_run, tmp_path):
    out = tmp_path / "ft"
    export_encoder(text_run, out, "text", log=lambda m: None)
    info = json.loads((out / "msa_cache_encoder.json").read_text())
    info["weights_sha256"] = "0" * 16
    (out / "msa_cache_encoder.json").write_text(json.dumps(info))
    with pytest.raises(EncoderUnavailable, match="was changed"):
        build_encoder(str(out))


def test_refusals_in_one_line(world, text_run, tmp_path):
    runner = CliRunner()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("")
    for args, says in ((["--modality", "image"], "has no image encoder"),
                       (["--modality", "text", "--", str(text_run), str(taken)], "already exists")):
        argv = ["export-encoder", str(text_run), str(tmp_path / "new"), *args] if "--" not in args else \
            ["export-encoder", "--modality", "text", str(text_run), str(taken)]
        r = runner.invoke(main, argv)
        assert r.exit_code != 0 and says in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-written

    r = runner.invoke(main, ["export-encoder", "--modality", "text", str(text_run), str(tmp_path / "ok")])
    assert r.exit_code == 0 and "--max-length 12 --clean none" in r.output, r.output


def test_fit_runs_cannot_be_exported(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    for f in ("metrics.json", "model.safetensors"):
        (run / f).write_text("{}")
    (run / "config.json").write_text(json.dumps({"spec": {}}))
    with pytest.raises(ValueError, match="trains no encoder"):
        export_encoder(run, tmp_path / "out", "text")


def test_extract_refuses_other_text_preprocessing_than_the_fine_tuning_unless_forced(world, text_run, tmp_path):
    """The run fine-tuned with --max-length 12 and no cleaning: extracting its export under other values is
    an error naming both values; --force turns it into a warning."""
    root, manifest, _, _ = world
    out = tmp_path / "ft"
    export_encoder(text_run, out, "text", log=lambda m: None)
    quiet = {k: v for k, v in QUIET.items() if k != "log"}
    with pytest.raises(ValueError, match=r"--max-length 16 \(fine-tuned with --max-length 12\).*--force"):
        extract(manifest, [str(out)], tmp_path / "c1", max_length=16, log=lambda m: None, **quiet)
    with pytest.raises(ValueError, match=r"--clean seed000-v2 \(fine-tuned with --clean none\)"):
        extract(manifest, [str(out)], tmp_path / "c1", max_length=12, clean="seed000-v2", log=lambda m: None, **quiet)
    assert not (tmp_path / "c1").exists()  # refused before anything is written
    seen = []
    extract(manifest, [str(out)], tmp_path / "c2", max_length=16, force=True, log=seen.append, **quiet)
    assert any(m.startswith("warning:") and "--max-length 16 (fine-tuned with --max-length 12)" in m for m in seen)
    assert open_cache(tmp_path / "c2/toy/path-ft").attrs["preprocessing"]["max_length"] == 16
    result = CliRunner().invoke(main, ["extract", "--manifest", str(manifest), "--encoder", str(out), "--out",
                                       str(tmp_path / "c3"), "--max-length", "16", "--no-progress"])
    assert result.exit_code != 0 and "--force" in result.output and len(result.output.strip().splitlines()) == 1
