"""Each manifest format built from tiny fixtures written here (images made with PIL)."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from msa_cache.manifest import ManifestError, read_manifest
from msa_cache.manifest.build import build_manifest


def make_image(path: Path, fmt: str = "JPEG", truncate: bool = False) -> Path:
    """A small noisy image (noise keeps the JPEG big enough to cut in half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(path.name)).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def rows_by_id(manifest_path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_manifest(manifest_path).table.to_pylist()}


# --- mvsa -------------------------------------------------------------------

def write_mvsa(root: Path, lines: list[str], texts: dict[str, bytes]) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    for post_id, data in texts.items():
        (root / "data" / f"{post_id}.txt").write_bytes(data)
        make_image(root / "data" / f"{post_id}.jpg")
    return root


def test_mvsa_single_merge_rule(tmp_path):
    root = write_mvsa(tmp_path / "MVSA_Single", [
        "ID\ttext,image",
        "1\tpositive,positive",   # equal -> positive
        "2\tneutral,positive",    # neutral + positive -> positive
        "3\tneutral,negative",    # neutral + negative -> negative
        "4\tnegative,neutral",    # negative + neutral -> negative
        "5\tpositive,negative",   # positive vs negative -> dropped
        "6\tneutral,neutral",     # equal -> neutral
        "7\thappy,positive",      # not a label word -> skipped, listed
    ], {str(i): f"post {i}".encode() for i in range(1, 8)})
    out = tmp_path / "m.parquet"
    summary = build_manifest("mvsa", root=root, output=out, allow_skips=True)

    rows = rows_by_id(out)
    assert {k: (r["label"], r["text_label"], r["image_label"]) for k, r in rows.items()} == {
        "1": (0, 0, 0), "2": (0, 1, 0), "3": (2, 1, 2), "4": (2, 2, 1), "6": (1, 1, 1),
    }
    assert rows["2"]["text"] == "post 2" and rows["2"]["image"] == "data/2.jpg"
    assert summary.dropped == {"text and image labels conflict (positive vs negative)": 1}
    assert summary.skipped == ["labelResultAll.txt:8: expected 'text,image' labels from "
                               "['positive', 'neutral', 'negative'], got 'happy,positive'"]
    m = read_manifest(out)
    assert m.meta.dataset == "mvsa-single" and m.meta.builder == "mvsa"
    assert m.meta.root == str(root.resolve())
    assert m.meta.split_rule == "stratified 80/10/10 seed=0"


def test_mvsa_multiple_majority_and_ties(tmp_path):
    root = write_mvsa(tmp_path / "mvsa-multiple", [
        "ID\ttext,image\ttext,image\ttext,image",
        "1\tpositive,neutral\tpositive,neutral\tnegative,neutral",   # text pos 2/3, image neu -> positive
        "2\tpositive,negative\tneutral,negative\tnegative,negative",  # text tie (no majority) -> dropped
        "3\tneutral,negative\tneutral,positive\tneutral,negative",   # neu + neg -> negative
        "4\tpositive,positive\tnegative,negative\tnegative,negative",  # neg, neg -> negative
    ], {str(i): b"x" for i in range(1, 5)})
    out = tmp_path / "m.parquet"
    summary = build_manifest("mvsa", root=root, output=out, split="70/10/20", seed=3)

    rows = rows_by_id(out)
    assert {k: (r["label"], r["text_label"], r["image_label"]) for k, r in rows.items()} == {
        "1": (0, 0, 1), "3": (2, 1, 2), "4": (2, 2, 2),
    }
    assert summary.dropped == {"no annotator majority": 1}
    assert summary.split_rule == "stratified 70/10/20 seed=3"


def test_mvsa_text_encodings_and_truncated_image(tmp_path):
    root = write_mvsa(tmp_path / "mvsa", [
        "ID\ttext,image", "1\tpositive,positive", "2\tpositive,positive",
        "3\tnegative,negative", "4\tnegative,negative", "5\tneutral,neutral",
    ], {
        "1": "你好 world 😀".encode("gb18030"),  # GB18030, like the shared copy
        "2": b"caf\xe9 \x81\xff",                 # not UTF-8, GB18030 nor cp1252: lossy
        "3": b"fine",
        "4": b"fine too",
        "5": b"fine",
    })
    (root / "data" / "4.txt").unlink()                       # text file missing
    make_image(root / "data" / "3.jpg", truncate=True)       # truncated JPEG
    (root / "data" / "5.jpg").unlink()                       # image missing

    out = tmp_path / "m.parquet"
    summary = build_manifest("mvsa", root=root, output=out)
    rows = rows_by_id(out)
    assert rows["1"]["text"] == "你好 world 😀" and rows["1"]["text_ok"] and rows["1"]["problem"] == ""
    assert not rows["2"]["text_ok"] and "bad bytes replaced" in rows["2"]["problem"]
    assert rows["3"]["text_ok"] and not rows["3"]["image_ok"]
    assert rows["3"]["problem"].startswith("image truncated: 3.jpg")
    assert not rows["4"]["text_ok"] and rows["4"]["problem"].startswith("text unreadable: 4.txt")
    assert not rows["5"]["image_ok"] and rows["5"]["problem"] == "image missing: 5.jpg"
    assert sorted(r["id"] for r in summary.bad_rows) == ["2", "3", "4", "5"]
    assert "image truncated: 3.jpg" in summary.format()

    kept = build_manifest("mvsa", root=root, output=tmp_path / "kept.parquet", drop_bad=True)
    assert list(rows_by_id(tmp_path / "kept.parquet")) == ["1"]
    assert sorted(r["id"] for r in kept.dropped_bad) == ["2", "3", "4", "5"] and kept.bad_rows == []
    # Dropping bad rows does not move the good ones to another split.
    assert rows_by_id(tmp_path / "kept.parquet")["1"]["split"] == rows["1"]["split"]


# --- clmlf ------------------------------------------------------------------

def write_clmlf(root: Path, splits_dir: str = "splits", image_dir: str = "data") -> Path:
    splits = {
        "train": [{"id": "1", "text": "good day", "emotion_label": 0},
                  {"id": "2", "text": "meh", "emotion_label": 1},
                  {"id": 3, "text": "bad day", "emotion_label": 2},
                  {"id": "4", "text": "odd", "emotion_label": 7}],       # bad label -> skipped
        "dev": [{"id": "5", "text": "nice", "emotion_label": "0"}],
        "test": [{"id": "6", "text": "who knows"}, {"id": "7", "text": "png one"}],  # unlabeled
    }
    (root / splits_dir).mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        (root / splits_dir / f"{split}.json").write_text(json.dumps(items))
    for i in range(1, 7):
        make_image(root / image_dir / f"{i}.jpg")
    make_image(root / image_dir / "7.png", "PNG")  # no 7.jpg: another extension is accepted
    return root


def test_clmlf_splits_labels_and_unlabeled_test(tmp_path):
    root = write_clmlf(tmp_path / "mvsa-single")
    out = tmp_path / "m.parquet"
    summary = build_manifest("clmlf", root=root, output=out, allow_skips=True)

    rows = rows_by_id(out)
    assert {k: (r["split"], r["label"]) for k, r in rows.items()} == {
        "1": ("train", 0), "2": ("train", 1), "3": ("train", 2), "5": ("dev", 0),
        "6": ("test", None), "7": ("test", None),
    }
    assert rows["7"]["image"] == "data/7.png" and all(r["image_ok"] for r in rows.values())
    assert summary.skipped == ["train.json[3]: emotion_label 7 is not 0, 1 or 2"]
    assert summary.split_sizes() == {"train": 3, "dev": 1, "test": 2}
    assert summary.counts["test"] == {"unlabeled": 2}
    assert read_manifest(out).meta.split_rule == "given"


def test_clmlf_flat_layout_and_override_flags(tmp_path):
    root = write_clmlf(tmp_path / "flat", splits_dir=".", image_dir="images")
    assert build_manifest("clmlf", root=root, output=tmp_path / "a.parquet", allow_skips=True).n_rows == 6
    root = write_clmlf(tmp_path / "custom", splits_dir="json", image_dir="pics")
    summary = build_manifest("clmlf", root=root, output=tmp_path / "b.parquet", splits_dir="json", image_dir="pics",
                             allow_skips=True)
    assert summary.n_rows == 6 and not summary.bad_rows


def test_clmlf_refuses_a_second_split(tmp_path):
    root = write_clmlf(tmp_path / "d")
    with pytest.raises(ManifestError, match="comes with its own train/dev/test split"):
        build_manifest("clmlf", root=root, output=tmp_path / "m.parquet", split="70/10/20")


# --- meme -------------------------------------------------------------------

def test_meme_mixed_image_formats_and_text_fallback(tmp_path):
    root = tmp_path / "memotion"
    make_image(root / "images" / "image_1.jpg")
    make_image(root / "images" / "image_2.png", "PNG")
    make_image(root / "images" / "image_3.bmp", "BMP")
    make_image(root / "images" / "image_4.png", "PNG")  # listed as .jpg in the CSV
    (root / "labels.csv").write_text(
        ",image_name,text_ocr,text_corrected,overall_sentiment\n"
        "0,image_1.jpg,OCR ONE,corrected one,very_positive\n"
        '1,image_2.png,"ocr, two",,negative\n'            # empty text_corrected -> text_ocr
        "2,image_3.bmp,,,neutral\n"                        # no text at all: allowed
        "3,image_4.jpg,x,four,very_negative\n"
        "4,image_5.jpg,x,five,ecstatic\n"                  # unknown class -> skipped
    )
    out = tmp_path / "m.parquet"
    summary = build_manifest("meme", root=root, output=out, allow_skips=True)

    rows = rows_by_id(out)
    assert {k: (r["text"], r["label"], r["image"]) for k, r in rows.items()} == {
        "image_1": ("corrected one", 4, "images/image_1.jpg"),
        "image_2": ("ocr, two", 1, "images/image_2.png"),
        "image_3": ("", 2, "images/image_3.bmp"),
        "image_4": ("four", 0, "images/image_4.png"),
    }
    assert all(r["image_ok"] for r in rows.values())
    assert summary.classes == ["very_negative", "negative", "neutral", "positive", "very_positive"]
    assert len(summary.skipped) == 1 and summary.skipped[0].startswith("labels.csv:6: overall_sentiment 'ecstatic'")


# --- hfm --------------------------------------------------------------------

def test_hfm_literal_lines_and_malformed_line(tmp_path):
    root = tmp_path / "sarcasm"
    (root / "text").mkdir(parents=True)
    (root / "text" / "train.txt").write_text(
        "['101', 'yeah right <user>', 1]\n"
        "['102', 'unterminated, 0]\n"                       # malformed -> skipped with file:line
        "__import__('os').system('echo pwned')\n"           # never evaluated
        "['103', \"it's fine\", 0]\n"
    )
    (root / "text" / "valid2.txt").write_text("['201', 'great, more rain', 0, 1]\n")  # last label wins
    (root / "text" / "test2.txt").write_text("['301', 'ok', 1, 0]\n")
    for post_id in ("101", "103", "201", "301"):
        make_image(root / "dataset_image" / f"{post_id}.jpg")

    out = tmp_path / "m.parquet"
    summary = build_manifest("hfm", root=root, output=out, allow_skips=True)
    rows = rows_by_id(out)
    assert {k: (r["split"], r["label"], r["text"]) for k, r in rows.items()} == {
        "101": ("train", 1, "yeah right <user>"), "103": ("train", 0, "it's fine"),
        "201": ("dev", 1, "great, more rain"), "301": ("test", 0, "ok"),
    }
    assert summary.skipped == ["text/train.txt:2: not a Python literal list",
                               "text/train.txt:3: not a Python literal list"]
    assert summary.classes == ["non-sarcastic", "sarcastic"]
    assert "text/train.txt:2" in summary.format()


# --- table ------------------------------------------------------------------

def table_images(root: Path, n: int) -> None:
    for i in range(n):
        make_image(root / "img" / f"{i}.png", "PNG")


def test_table_csv_string_labels_with_class_order(tmp_path):
    root = tmp_path / "own"
    table_images(root, 4)
    (root / "posts.csv").write_text(
        "post,caption,picture,mood\n"
        "a,hello,img/0.png,happy\n"
        "b,,img/1.png,sad\n"
        "c,hm,img/2.png,\n"            # empty label -> unlabeled
        "d,hm,img/3.png,angry\n"       # not in --classes -> skipped
    )
    out = tmp_path / "m.parquet"
    summary = build_manifest(
        "table", root=root, output=out, file="posts.csv", id_col="post", text_col="caption",
        image_col="picture", label_col="mood", classes="sad,happy", allow_skips=True,
    )
    rows = rows_by_id(out)
    assert {k: (r["text"], r["label"], r["image"]) for k, r in rows.items()} == {
        "a": ("hello", 1, "img/0.png"), "b": ("", 0, "img/1.png"), "c": ("hm", None, "img/2.png"),
    }
    assert summary.classes == ["sad", "happy"] and summary.dataset == "posts"
    assert summary.skipped[0].startswith("posts.csv:5: label 'angry' is not one of ['sad', 'happy']")
    assert summary.split_rule.startswith("stratified 80/10/10")


def test_table_jsonl_int_labels_and_bad_line(tmp_path):
    root = tmp_path / "own"
    table_images(root, 3)
    lines = [json.dumps({"id": i, "text": f"t{i}", "image": f"img/{i}.png", "label": i % 2}) for i in range(3)]
    (root / "posts.jsonl").write_text("\n".join(lines[:2] + ["{oops", lines[2]]) + "\n")
    out = tmp_path / "m.parquet"
    summary = build_manifest("table", root=root, output=out, file=str(root / "posts.jsonl"), allow_skips=True)
    assert {k: r["label"] for k, r in rows_by_id(out).items()} == {"0": 0, "1": 1, "2": 0}
    assert summary.classes == ["0", "1"]
    assert summary.skipped == ["posts.jsonl:3: not valid JSON (Expecting property name enclosed in double quotes)"]


def test_table_parquet_with_split_column_and_modality_labels(tmp_path):
    root = tmp_path / "own"
    table_images(root, 3)
    pq.write_table(pa.table({
        "id": ["x", "y", "z"], "text": ["one", "two", "three"],
        "image": ["img/0.png", "img/1.png", "img/2.png"],
        "label": ["pos", "neg", "pos"], "t": ["pos", "neg", "neg"], "i": ["pos", "pos", "pos"],
        "split": ["train", "val", "TEST"],
    }), root / "posts.parquet")
    out = tmp_path / "m.parquet"
    summary = build_manifest("table", root=root, output=out, file="posts.parquet",
                             text_label_col="t", image_label_col="i")
    rows = rows_by_id(out)
    assert {k: (r["split"], r["label"], r["text_label"], r["image_label"]) for k, r in rows.items()} == {
        "x": ("train", 1, 1, 1), "y": ("dev", 0, 0, 1), "z": ("test", 1, 0, 1),
    }
    assert summary.classes == ["neg", "pos"] and summary.split_rule == "given"


def test_table_missing_column_names_the_flag(tmp_path):
    root = tmp_path / "own"
    root.mkdir()
    (root / "t.csv").write_text("id,text,image\n1,a,x.jpg\n")
    with pytest.raises(ManifestError, match=r"no column 'label' .* pass --label-col NAME"):
        build_manifest("table", root=root, output=tmp_path / "m.parquet", file="t.csv")
