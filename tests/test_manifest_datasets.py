"""The datasets the seed papers report on, each from a fixture in its released format (a few rows,
drawn images), plus the papers' split sizes checked on synthetic rows where a fixture can't hold them:
Twitter-15/17 (TomBERT tsv), MVSA-Multiple (CLMLF split and original release), HFM (both layouts),
TumEmo (the `table` recipe)."""
import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from msa_cache.manifest import ManifestError, read_manifest
from msa_cache.manifest.build import build_manifest
from msa_cache.manifest.builders.clmlf import build_clmlf
from msa_cache.manifest.builders.hfm import build_hfm
from msa_cache.manifest.builders.mvsa import build_mvsa
from msa_cache.manifest.builders.tmsc import build_tmsc
from msa_cache.manifest.info import summarize


def draw_image(path: Path, seed: int, fmt: str = "JPEG") -> Path:
    """A small drawn picture: a coloured ellipse on a coloured background."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (40, 32), ((37 * seed) % 256, 90, 200 - seed % 150))
    ImageDraw.Draw(im).ellipse((4 + seed % 9, 4, 30, 28), fill=(250, (53 * seed) % 256, 20))
    im.save(path, fmt)
    return path


@pytest.fixture
def jpg_only(monkeypatch):
    """For the split-size tests on thousands of synthetic rows without image files: skip the search
    through other extensions (the image checks are not what they test)."""
    import msa_cache.manifest.builders as b

    for module in (b.clmlf, b.hfm, b.mvsa):
        monkeypatch.setattr(module, "find_image", lambda folder, stem: folder / f"{stem}.jpg")


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_manifest(path).table.to_pylist()}


# --- Twitter-15 / Twitter-17 (TomBERT) ---------------------------------------------------------

TSV_HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"


def write_tsv(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([TSV_HEADER] + ["\t".join(str(f) for f in r) for r in rows]) + "\n")


def tomBERT_release(base: Path, name: str = "twitter2015") -> Path:
    """absa_data/<name>/{train,dev,test}.tsv and the image release's <name>_images/ next to it."""
    root = base / "absa_data" / name
    write_tsv(root / "train.tsv", [
        # one tweet, two targets: same sentence and image, different labels
        (0, 2, "1860693.jpg", "RT @ ltsChuckBass : $T$ is everything # MCM", "Chuck Bass"),
        (1, 1, "1860693.jpg", "RT @ ltsChuckBass : Chuck Bass is everything # $T$", "MCM"),
        (2, 0, "726.jpg", "$T$ lost again , sad day for $T$ fans", "Arsenal"),
        (3, 5, "726.jpg", "bad $T$ label", "x"),          # label outside 0..2 -> skipped
        (4, 1, "727.jpg", "no target mark here", "Obama"),  # no $T$ -> skipped
    ])
    write_tsv(root / "dev.tsv", [(0, 1, "900.jpg", "$T$ speaks in Ohio", "Obama")])
    write_tsv(root / "test.tsv", [(0, 2, "901.png", "loving the new $T$ album", "Adele"),
                                  (1, 2, "missing.jpg", "$T$ wins", "Team")])
    images = base / "absa_data" / f"{name}_images"
    for i, file in enumerate(["1860693.jpg", "726.jpg", "900.jpg"]):
        draw_image(images / file, i)
    draw_image(images / "901.png", 7, "PNG")
    return root


def test_tmsc_sentence_pairs_shared_images_and_ids(tmp_path):
    root = tomBERT_release(tmp_path)
    out = tmp_path / "t15.parquet"
    summary = build_manifest("tmsc", root=root, output=out, allow_skips=True)  # images found at ../twitter2015_images
    rows = by_id(out)
    assert {k: (r["split"], r["label"], r["text"], r["text_pair"], r["image"]) for k, r in rows.items()} == {
        "train-0": ("train", 2, "RT @ ltsChuckBass : Chuck Bass is everything # MCM", "Chuck Bass",
                    "../twitter2015_images/1860693.jpg"),
        "train-1": ("train", 1, "RT @ ltsChuckBass : Chuck Bass is everything # MCM", "MCM",
                    "../twitter2015_images/1860693.jpg"),
        "train-2": ("train", 0, "Arsenal lost again , sad day for Arsenal fans", "Arsenal",
                    "../twitter2015_images/726.jpg"),
        "dev-0": ("dev", 1, "Obama speaks in Ohio", "Obama", "../twitter2015_images/900.jpg"),
        "test-0": ("test", 2, "loving the new Adele album", "Adele", "../twitter2015_images/901.png"),
        "test-1": ("test", 2, "Team wins", "Team", "../twitter2015_images/missing.jpg"),
    }
    assert not rows["test-1"]["image_ok"] and "image missing: missing.jpg" in rows["test-1"]["problem"]
    assert summary.skipped == ["train.tsv:5: label '5' is not 0, 1 or 2",
                               "train.tsv:6: the sentence has no $T$ where the target goes"]
    m = read_manifest(out)
    assert m.classes == ["negative", "neutral", "positive"] and m.meta.dataset == "twitter2015"
    assert m.meta.monitor == "macro-f1" and m.meta.split_rule == "given"
    assert m.has_text_pair and m.text_pairs()[0] == "Chuck Bass"
    assert summary.distinct_images == 5 and "text pairs" in summary.format()


def test_tmsc_image_dir_option_and_missing_folder(tmp_path):
    root = tomBERT_release(tmp_path, "twitter")  # Twitter-17's folder is absa_data/twitter
    (tmp_path / "absa_data" / "twitter_images").rename(tmp_path / "pictures")
    with pytest.raises(ManifestError, match="no image folder .*twitter2017_images.* pass --image-dir"):
        build_manifest("tmsc", root=root, output=tmp_path / "x.parquet", allow_skips=True)
    out = tmp_path / "t17.parquet"
    build_manifest("tmsc", root=root, output=out, image_dir=str(tmp_path / "pictures"), allow_skips=True)
    assert by_id(out)["dev-0"]["image_ok"]


def test_tmsc_cli(tmp_path):
    from msa_cache_cli.manifest import manifest

    root = tomBERT_release(tmp_path)
    result = CliRunner().invoke(manifest, ["tmsc", "--root", str(root), "-o", str(tmp_path / "m.parquet"),
                                           "--monitor", "accuracy", "--allow-skips"])
    assert result.exit_code == 0, result.output
    assert "default monitor accuracy" in result.output  # --monitor overrides the dataset's default
    assert read_manifest(tmp_path / "m.parquet").meta.monitor == "accuracy"


@pytest.mark.parametrize("name,sizes", [("twitter2015", (3179, 1122, 1037)), ("twitter", (3562, 1176, 1234))])
def test_tmsc_paper_split_sizes(tmp_path, name, sizes):
    """The released files' row counts come through one row per line (targets of one tweet stay apart)."""
    root = tmp_path / name
    (root / "images").mkdir(parents=True)
    for split, n in zip(("train", "dev", "test"), sizes):
        # ~1.35 targets per tweet, as in the release: consecutive rows share a sentence and an image
        write_tsv(root / f"{split}.tsv", [(i, i % 3, f"{i * 20 // 27}.jpg", f"$T$ and tweet {i * 20 // 27}",
                                           f"target {i}") for i in range(n)])
    result = build_tmsc(root)
    assert Counter(r["split"] for r in result.rows) == dict(zip(("train", "dev", "test"), sizes))
    assert len({r["id"] for r in result.rows}) == sum(sizes) and not result.skipped


# --- MVSA-Multiple -----------------------------------------------------------------------------

def test_mvsa_multiple_clmlf_layout(tmp_path):
    """CLMLF's MVSA-Multiple: the same json as MVSA-Single (emotion_label 0 pos, 1 neu, 2 neg)."""
    root = tmp_path / "MVSA-multiple"
    splits = {"train": [{"id": "1", "text": "love it #happy", "emotion_label": 0},
                        {"id": "2", "text": "meh", "emotion_label": 1}],
              "dev": [{"id": "3", "text": "awful", "emotion_label": 2}],
              "test": [{"id": "4", "text": "ok then", "emotion_label": 1}]}
    for split, items in splits.items():
        root.mkdir(exist_ok=True)
        (root / f"{split}.json").write_text(json.dumps(items))
    for i in range(1, 5):
        draw_image(root / "dataset_image" / f"{i}.jpg", i)
    out = tmp_path / "m.parquet"
    build_manifest("clmlf", root=root, output=out, allow_skips=True)
    rows = by_id(out)
    assert {k: (r["split"], r["label"], r["image"], r["image_ok"]) for k, r in rows.items()} == {
        "1": ("train", 0, "dataset_image/1.jpg", True), "2": ("train", 1, "dataset_image/2.jpg", True),
        "3": ("dev", 2, "dataset_image/3.jpg", True), "4": ("test", 1, "dataset_image/4.jpg", True)}
    m = read_manifest(out)
    assert m.meta.monitor == "weighted-f1" and m.meta.dataset == "mvsa-multiple" and not m.has_text_pair


def test_mvsa_multiple_clmlf_split_sizes(tmp_path, jpg_only):
    root = tmp_path / "mvsa-m"
    (root / "data").mkdir(parents=True)
    start = 0
    for split, n in (("train", 13624), ("dev", 1700), ("test", 1700)):
        (root / f"{split}.json").write_text(json.dumps(
            [{"id": str(start + i), "text": "t", "emotion_label": i % 3} for i in range(n)]))
        start += n
    result = build_clmlf(root)
    assert Counter(r["split"] for r in result.rows) == {"train": 13624, "dev": 1700, "test": 1700}
    assert sum(1 for r in result.rows) == 17024


def test_mvsa_multiple_original_release_filters_to_17024(tmp_path, jpg_only):
    """19,600 posts, three annotators each: per-modality majority, then the merge rule, leave 17,024."""
    root = tmp_path / "MVSA"
    (root / "data").mkdir(parents=True)
    kinds = ["keep"] * 17024 + ["no-majority"] * 1500 + ["conflict"] * 1076
    votes = {
        "keep": ["positive,neutral", "positive,neutral", "negative,positive"],  # text pos, image neu -> pos
        "no-majority": ["positive,neutral", "neutral,neutral", "negative,neutral"],  # text 1/1/1 -> dropped
        "conflict": ["positive,negative", "positive,negative", "neutral,negative"],  # pos vs neg -> dropped
    }
    lines = ["ID\ttext,image\ttext,image\ttext,image"]
    lines += [f"{i + 1}\t" + "\t".join(votes[k]) for i, k in enumerate(kinds)]
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    result = build_mvsa(root)
    assert len(result.rows) == 17024
    assert dict(result.dropped) == {"no annotator majority": 1500,
                                    "text and image labels conflict (positive vs negative)": 1076}
    assert {(r["label"], r["text_label"], r["image_label"]) for r in result.rows} == {(0, 0, 1)}


# --- HFM ---------------------------------------------------------------------------------------

def test_hfm_clmlf_layout(tmp_path):
    root = tmp_path / "HFM"
    root.mkdir()
    (root / "train.json").write_text(json.dumps([
        {"id": "682716753374351360", "text": "yeah , great weather <user>", "label": 1},
        {"id": "682716753374351361", "text": "lunch", "label": 0},
        {"id": "682716753374351362", "text": "x", "label": 3},        # not 0/1 -> skipped
    ]))
    (root / "valid.json").write_text(json.dumps([{"id": "2", "text": "so fun", "emotion_label": "1"}]))
    (root / "test.json").write_text(json.dumps([{"id": "3", "text": "nice", "label": 0}]))
    for i, post in enumerate(["682716753374351360", "682716753374351361", "2", "3"]):
        draw_image(root / "dataset_image" / f"{post}.jpg", i)
    out = tmp_path / "hfm.parquet"
    summary = build_manifest("hfm", root=root, output=out, allow_skips=True)
    rows = by_id(out)
    assert {k: (r["split"], r["label"], r["text"]) for k, r in rows.items()} == {
        "682716753374351360": ("train", 1, "yeah , great weather <user>"),
        "682716753374351361": ("train", 0, "lunch"), "2": ("dev", 1, "so fun"), "3": ("test", 0, "nice")}
    assert summary.skipped == ["train.json[2]: label 3 is not 0 or 1"]
    assert read_manifest(out).meta.monitor == "macro-f1"
    with pytest.raises(ManifestError, match="--layout 'both'"):
        build_manifest("hfm", root=root, output=out, layout="both")


@pytest.mark.parametrize("layout", ["clmlf", "original"])
def test_hfm_paper_split_sizes(tmp_path, layout, jpg_only):
    root = tmp_path / "hfm"
    (root / "dataset_image").mkdir(parents=True)
    sizes = {"train": 19816, "dev": 2410, "test": 2409}
    start = 0
    for split, n in sizes.items():
        ids = range(start, start + n)
        start += n
        if layout == "clmlf":
            name = {"train": "train", "dev": "valid", "test": "test"}[split]
            (root / f"{name}.json").write_text(json.dumps([{"id": str(i), "text": "t", "label": i % 2} for i in ids]))
        else:
            (root / "text").mkdir(exist_ok=True)
            name = {"train": "train.txt", "dev": "valid2.txt", "test": "test2.txt"}[split]
            extra = "" if split == "train" else ", 0"  # valid2/test2 carry two labels; the last counts
            (root / "text" / name).write_text("".join(f"['{i}', 't'{extra}, {i % 2}]\n" for i in ids))
    result = build_hfm(root)
    assert Counter(r["split"] for r in result.rows) == sizes and not result.skipped


# --- TumEmo: the `table` recipe ----------------------------------------------------------------

TUMEMO_CLASSES = "angry,bored,calm,fearful,happy,loving,sad"


def test_tumemo_table_recipe(tmp_path):
    """The README recipe: one CSV (id, text, image, emotion, split) over the image folder, then
    `manifest table --classes angry,...,sad --monitor weighted-f1 --name tumemo`."""
    root = tmp_path / "TumEmo"
    emotions = TUMEMO_CLASSES.split(",")
    lines = ["id,text,image,emotion,split"]
    for i, emotion in enumerate(emotions + ["happy"]):
        draw_image(root / "image" / f"{i}.jpg", i)
        split = "train" if i < 5 else "valid" if i < 7 else "test"
        lines.append(f"{i},\"post {i}, tagged {emotion}\",image/{i}.jpg,{emotion},{split}")
    (root / "tumemo.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "tumemo.parquet"
    summary = build_manifest("table", root=root, output=out, name="tumemo", file="tumemo.csv",
                             label_col="emotion", classes=TUMEMO_CLASSES, monitor="weighted-f1")
    rows = by_id(out)
    assert [rows[str(i)]["label"] for i in range(8)] == [0, 1, 2, 3, 4, 5, 6, 4]
    assert rows["1"]["text"] == "post 1, tagged bored" and rows["6"]["split"] == "dev"
    m = read_manifest(out)
    assert m.classes == emotions and m.meta.monitor == "weighted-f1" and m.meta.dataset == "tumemo"
    assert summary.split_sizes() == {"train": 5, "dev": 2, "test": 1}


def test_tumemo_paper_split_sizes(tmp_path):
    """INFIG's table 1: 156,204 / 19,525 / 19,536; a split column passes through row for row."""
    sizes = {"train": 156204, "valid": 19525, "test": 19536}
    n = sum(sizes.values())
    emotions = TUMEMO_CLASSES.split(",")
    split = [s for s, k in sizes.items() for _ in range(k)]
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": ["t"] * n,
                             "image": [f"image/{i}.jpg" for i in range(n)],
                             "emotion": [emotions[i % 7] for i in range(n)], "split": split}),
                   tmp_path / "tumemo.parquet")
    from msa_cache.manifest.builders.table import build_table

    result = build_table(tmp_path, file="tumemo.parquet", label_col="emotion", classes=TUMEMO_CLASSES)
    assert Counter(r["split"] for r in result.rows) == {"train": 156204, "dev": 19525, "test": 19536}


# --- defaults and older manifests --------------------------------------------------------------

def test_default_monitor_per_format(tmp_path):
    from msa_cache.manifest.builders import BUILDERS

    monitors = {f: getattr(__import__(b.__module__, fromlist=["MONITOR"]), "MONITOR", "") for f, b in BUILDERS.items()}
    assert monitors.items() >= {  # a format added later brings its own
        "mvsa": "weighted-f1", "clmlf": "weighted-f1", "meme": "macro-f1", "hfm": "macro-f1",
        "tmsc": "macro-f1", "table": ""}.items()
    with pytest.raises(ManifestError, match="--monitor 'f1'"):
        build_manifest("tmsc", root=tomBERT_release(tmp_path), output=tmp_path / "m.parquet", monitor="f1")


def test_manifest_without_text_pair_column_still_reads(tmp_path):
    """Manifests written before text_pair existed read as all-null, with the fingerprint they had."""
    root = tomBERT_release(tmp_path)
    out = tmp_path / "m.parquet"
    build_manifest("tmsc", root=root, output=out, allow_skips=True)
    m = read_manifest(out)
    old = m.table.drop(["text_pair"]).replace_schema_metadata(pq.read_table(out).schema.metadata)
    pq.write_table(old, tmp_path / "old.parquet")
    o = read_manifest(tmp_path / "old.parquet")
    assert not o.has_text_pair and o.text_pairs() is None and o.column("text_pair") == [None] * len(o)
    assert o.fingerprint() != m.fingerprint()  # the pairs are part of what a cache was made from
    # without pairs or per-modality labels: the fingerprint of before, so existing caches stay valid
    h = hashlib.sha256(json.dumps(o.classes).encode())
    for col in ("id", "text", "image", "label", "split", "image_ok"):
        h.update(json.dumps(o.column(col), ensure_ascii=False).encode("utf-8"))
    assert o.fingerprint() == h.hexdigest()[:16]
    assert summarize(o).text_pair is False
