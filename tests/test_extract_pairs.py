"""Target-oriented data (Twitter-15/17) through extraction and prediction: sentence + target pairs
reach the tokenizer as text_pair (with segment ids) and are recorded in the cache; rows sharing one
image are encoded once per shard, with resume and multi-process runs still byte-identical; predict
takes --text-pair."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

from msa_cache.cache import CacheMismatchError, open_cache
from msa_cache.encoders import build_encoder
from msa_cache.extract import extract
from msa_cache.extract.dataset import RowDataset
from msa_cache.extract.shared import SharedRows, image_sources
from msa_cache.finetune.data import PostCollator, PostDataset
from msa_cache.manifest import ManifestMeta, read_manifest, rows_to_table, write_manifest
from msa_cache.manifest.build import build_manifest
from msa_cache.predict import load_predictor, predict_manifest, predict_post
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run
from msa_cache_cli.predict import predict_cmd

import tiny_models

QUIET = {"batch_size": 3, "workers": 0, "progress": False, "log": lambda m: None}
HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"
# Tweets with their targets: (sentence with $T$ slots filled per target, targets, label per target)
TWEETS = [
    ("$T$ is everything # MCM", ["Chuck Bass", "MCM"], [2, 1]),
    ("$T$ lost again , sad day", ["Arsenal"], [0]),
    ("$T$ and $T$ meet in Ohio today", ["Obama", "Ohio", "today"], [1, 1, 1]),
    ("loving the new $T$ album", ["Adele"], [2]),
    ("$T$ fans are furious with $T$", ["Chelsea", "Mourinho"], [0, 0]),
    ("great game by $T$", ["Messi"], [2]),
]


def draw(path, seed):
    im = Image.new("RGB", (40, 36), (30 * seed % 256, 120, 200 - 20 * seed))
    ImageDraw.Draw(im).rectangle((5 + seed, 6, 30, 20 + seed), fill=(240, 40 * seed % 256, 10))
    im.save(path)


def write_release(root):
    """Train rows: one per (tweet, target), consecutive rows of a tweet sharing its image and sentence."""
    (root / "images").mkdir(parents=True)
    lines, n = [HEADER], 0
    for t, (sentence, targets, labels) in enumerate(TWEETS):
        draw(root / "images" / f"{t}.jpg", t)
        for target, label in zip(targets, labels):
            lines.append(f"{n}\t{label}\t{t}.jpg\t{sentence}\t{target}")
            n += 1
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    (root / "dev.tsv").write_text("\n".join([HEADER] + lines[1:4]) + "\n")  # 3 rows, also sharing images
    (root / "test.tsv").write_text(HEADER + "\n0\t" + lines[5].split("\t", 1)[1] + "\n")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("tmsc")
    data = write_release(root / "twitter2015")
    manifest = root / "twitter2015.parquet"
    build_manifest("tmsc", root=data, output=manifest)
    bert, vit = tiny_models.model_folders(root / "models", tokenizer)
    return root, manifest, bert, vit


def test_pairs_reach_the_tokenizer_with_segment_ids_and_are_recorded(world, tokenizer, tmp_path):
    root, manifest, bert, vit = world
    man = read_manifest(manifest)
    extract(manifest, [str(bert)], tmp_path, max_length=24, shard_size=8, **QUIET)
    cache = open_cache(tmp_path / "twitter2015" / "path-tiny-bert")
    assert cache.attrs["preprocessing"]["text_pair"] is True

    texts, pairs = man.column("text"), man.text_pairs()
    assert texts[0] == "Chuck Bass is everything # MCM" and pairs[:2] == ["Chuck Bass", "MCM"]
    enc = tokenizer(texts, pairs, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    np.testing.assert_array_equal(cache.read("text/input_ids"), enc["input_ids"].numpy())
    decoded = tokenizer.decode(enc["input_ids"][0][enc["attention_mask"][0].bool()])
    assert decoded == "[CLS] chuck bass is everything # mcm [SEP] chuck bass [SEP]"

    model = tiny_models.tiny_bert(tokenizer, dropout=0.0).eval()
    with torch.inference_mode():
        with_segments = model(**enc).last_hidden_state[:, 0]
        without = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state[:, 0]
    stored = cache.read("text/cls")
    np.testing.assert_allclose(stored, with_segments.numpy(), atol=2e-3, rtol=2e-3)
    assert not np.allclose(stored, without.numpy(), atol=2e-3)  # the target's segment ids were used


def test_a_pair_cache_is_never_taken_for_a_plain_one(world, tmp_path):
    root, manifest, bert, vit = world
    extract(manifest, [str(bert)], tmp_path, max_length=24, shard_size=8, **QUIET)
    man = read_manifest(manifest)
    plain = man.table.to_pylist()
    for r in plain:
        r["text_pair"] = None
    meta = ManifestMeta(**{**vars(man.meta)})
    same_name = write_manifest(rows_to_table(plain), meta, tmp_path / "plain" / "twitter2015.parquet")
    with pytest.raises(CacheMismatchError, match=r"preprocessing.text_pair: True -> None"):
        extract(same_name, [str(bert)], tmp_path, max_length=24, shard_size=8, **QUIET)


def _count_image_rows(encoder):
    """Wrap the encoder's forward to count the rows it is given (the shape probe has no 'rows')."""
    seen = []
    forward = encoder._forward

    def counting(batch):
        if "rows" in batch:
            seen.extend(batch["rows"].tolist())
        return forward(batch)

    encoder._forward = counting
    return seen


def test_shared_images_are_encoded_once_per_shard(world, tmp_path):
    root, manifest, bert, vit = world
    man = read_manifest(manifest)
    images = man.column("image")
    # shard size 4 over the 11 train rows + 3 dev + 1 test: tweet 2's three rows straddle shards 0/1
    enc = build_encoder(str(vit))
    seen = _count_image_rows(enc)
    report = extract(man, [enc], tmp_path, shard_size=4, dtype="float32", **QUIET).encoders[0]
    per_shard = [len(set(images[a:a + 4])) for a in range(0, len(man), 4)]
    assert len(seen) == sum(per_shard) == len(man) - report.rows_shared and report.rows_shared > 0
    assert sorted(seen) == sorted(set(seen))  # no row computed twice
    assert f"{sum(per_shard)} images encoded, {report.rows_shared} rows share one of them" in report.summary()

    cache = open_cache(tmp_path / "twitter2015" / "path-tiny-vit")
    assert cache.attrs["extract_config"]["shared_images"] == "once per shard, by resolved path"
    pooled = cache.read("image/pooled")
    for a in range(len(man)):
        for b in range(len(man)):
            if images[a] == images[b]:
                np.testing.assert_allclose(pooled[a], pooled[b], atol=1e-5)
    # each row's features are its own image's: a direct forward per row agrees
    direct = build_encoder(str(vit))
    ds = RowDataset(man, None, direct.image)
    with torch.inference_mode():
        for row in range(len(man)):
            out = direct.forward({"pixel_values": ds[row]["pixels"][None]})
            np.testing.assert_allclose(pooled[row], out["image/pooled"][0].numpy(), atol=1e-4)


def test_shared_images_resume_and_two_processes_give_the_same_bytes(world, tmp_path):
    root, manifest, bert, vit = world
    extract(manifest, [str(vit)], tmp_path / "a", shard_size=4, **QUIET)
    folder = tmp_path / "a" / "twitter2015" / "path-tiny-vit"
    before = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.h5"))}
    (folder / "shard-00001.h5").unlink()  # the shard whose first rows share tweet 2's image with shard 0
    report = extract(manifest, [str(vit)], tmp_path / "a", shard_size=4, **QUIET).encoders[0]
    assert report.shards_written == [1]
    assert {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.h5"))} == before

    for k in (0, 1):
        extract(manifest, [str(vit)], tmp_path / "b", shard_size=4, num_shards=2, shard_index=k, **QUIET)
    merged, single = open_cache(tmp_path / "b" / "twitter2015" / "path-tiny-vit"), open_cache(folder)
    for field in single.fields():
        np.testing.assert_array_equal(merged.read(field), single.read(field))


def test_saving_on_a_twitter15_like_set():
    """Twitter-15 sizes (3,179 / 1,122 / 1,037 rows) with tweets of 1-3 targets in consecutive rows:
    the image encoder runs once per distinct image (per 1024-row shard), not once per row."""
    rng = np.random.default_rng(0)
    images, tweet = [], 0
    while len(images) < 3179 + 1122 + 1037:
        images += [f"{tweet}.jpg"] * int(rng.choice([1, 2, 3], p=[0.72, 0.22, 0.06]))
        tweet += 1
    images = images[:5338]

    class Fake:
        def column(self, name):
            return images if name == "image" else [True] * len(images)

        def image_path(self, p):
            return f"/data/twitter2015_images/{p}"

    ranges = [(a, min(a + 1024, len(images))) for a in range(0, len(images), 1024)]
    shared = SharedRows(image_sources(Fake(), ranges))
    encoded = int(shared.computed.sum())
    assert encoded == sum(len(set(images[a:b])) for a, b in ranges)
    assert len(set(images)) <= encoded <= len(set(images)) + len(ranges) - 1  # a tweet may straddle a shard
    assert 1 - encoded / len(images) == pytest.approx(1 - len(set(images)) / len(images), abs=1e-3)


def test_finetune_batches_carry_the_pairs_as_extraction_does(world):
    root, manifest, bert, vit = world
    man = read_manifest(manifest)
    text = build_encoder(str(bert), max_length=24)
    specs = {"text": (text.text, None)}
    ds = PostDataset(man, np.arange(4), specs)
    batch = PostCollator(specs, pad_to_max=True)([ds[i] for i in range(4)])
    want = text.collator()([RowDataset(man, text.text, None)[i] for i in range(4)])
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        torch.testing.assert_close(batch[f"text/{key}"], want[key])


@pytest.fixture(scope="module")
def pair_run(world):
    root, manifest, bert, vit = world
    extract(manifest, [str(bert), str(vit)], root / "cache", max_length=24, shard_size=8, **QUIET)
    caches = {"text": str(root / "cache/twitter2015/path-tiny-bert"),
              "image": str(root / "cache/twitter2015/path-tiny-vit")}
    spec = RunSpec(str(manifest), caches, "late", {"hidden": 16}, TrainConfig(max_epochs=2, batch_size=4), 0)
    return fit_run(spec, root / "runs", log=lambda m: None)


def test_run_uses_the_manifest_monitor_and_records_it(world, pair_run):
    import json

    config = json.loads((pair_run.path / "config.json").read_text())
    assert config["spec"]["train"]["monitor"] == "macro-f1"  # Twitter-15's default, resolved into the identity
    history = (pair_run.path / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["monitor"] == "macro-f1"


def test_predict_takes_the_target_as_text_pair(world, pair_run, tmp_path):
    root, manifest, bert, vit = world
    run = pair_run.path
    man = read_manifest(manifest)
    predictor = load_predictor(run)
    assert predictor.text_pair
    table = predict_manifest(run, manifest, predictor=predictor).to_pydict()
    want = pq.read_table(run / "predictions.parquet").to_pydict()
    np.testing.assert_allclose(table["prob_positive"], want["prob_positive"], atol=1e-5)

    image = str(man.image_path(man.column("image")[1]))
    one = predict_post(run, man.column("text")[1], image, predictor=predictor, text_pair="MCM")
    assert abs(one["probs"]["positive"] - want["prob_positive"][1]) < 1e-4
    with pytest.raises(ValueError, match="pass --text-pair TARGET"):
        predict_post(run, man.column("text")[1], image, predictor=predictor)

    plain = man.table.to_pylist()
    for r in plain:
        r["text_pair"] = None
    no_pairs = write_manifest(rows_to_table(plain), man.meta, tmp_path / "no-pairs.parquet")
    with pytest.raises(ValueError, match="no text_pair column"):
        predict_manifest(run, no_pairs, predictor=predictor)

    result = CliRunner().invoke(predict_cmd, [str(run), "--text", man.column("text")[1], "--image", image,
                                              "--text-pair", "MCM", "--json"])
    assert result.exit_code == 0, result.output
    assert '"class"' in result.output
