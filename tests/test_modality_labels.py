"""MVSA's per-modality labels (text_label / image_label, from the original release's annotators) reach
MDSE's contrastive loss through the trainer, as the image and text embeddings' labels; without them the
multimodal label stands in."""
from pathlib import Path

import pytest
from PIL import Image

from msa_cache.encoders.synthetic import ArrayEncoder, random_rows
from msa_cache.extract import extract
from msa_cache.heads.mdse import MDSE
from msa_cache.manifest import read_manifest
from msa_cache.manifest.build import build_manifest
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run

N_POSTS = 48
# (text votes, image votes) of three annotators -> per-modality majority, then the merge rule:
PATTERNS = [
    ("positive", "neutral"),   # text pos, image neu -> label pos: the image label differs from the label
    ("neutral", "negative"),   # text neu, image neg -> label neg: the text label differs
    ("negative", "negative"),  # all agree
    ("neutral", "positive"),   # text neu, image pos -> label pos
]


def write_mvsa_multiple(root):
    (root / "data").mkdir(parents=True)
    lines = ["ID\ttext,image\ttext,image\ttext,image"]
    for i in range(1, N_POSTS + 1):
        text, image = PATTERNS[i % len(PATTERNS)]
        lines.append(f"{i}\t" + "\t".join([f"{text},{image}"] * 3))
        (root / "data" / f"{i}.txt").write_text(f"post {i}")
        Image.new("RGB", (8, 8), (5 * i, 0, 0)).save(root / "data" / f"{i}.jpg")
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def mvsa_world(tmp_path_factory):
    base = tmp_path_factory.mktemp("mvsa-m")
    out = base / "mvsa-multiple.parquet"
    build_manifest("mvsa", root=write_mvsa_multiple(base / "MVSA"), output=out, split="50/25/25")
    return base, out, _extract(out, base / "cache")


def _extract(manifest, cache_root):
    """Random-array caches for a manifest (a cache belongs to exactly one manifest fingerprint)."""
    text = ArrayEncoder("t", "text", {"text/cls": (8,), "text/tokens": (5, 8), "text/mask": (5,)},
                        random_rows({"text/cls": (8,), "text/tokens": (5, 8), "text/mask": (5,)}, 1, (2, 5)))
    image = ArrayEncoder("i", "image", {"image/pooled": (6,), "image/tokens": (4, 6)},
                         random_rows({"image/pooled": (6,), "image/tokens": (4, 6)}, 2))
    extract(manifest, [text, image], cache_root, shard_size=64, batch_size=16, workers=0, progress=False,
            log=lambda m: None)
    return {"text": str(cache_root / "mvsa-multiple/t"), "image": str(cache_root / "mvsa-multiple/i")}


def _spy(monkeypatch):
    """Record, per training batch, the ids and the labels MDSE's MACL gives each embedding block."""
    calls = []
    original = MDSE.macl_set

    def spy(self, out, batch):
        emb, labels = original(self, out, batch)
        calls.append((list(batch.ids), labels.detach().cpu().numpy(), {k: v.clone() for k, v in
                                                                       batch.modality_labels.items()}))
        return emb, labels

    monkeypatch.setattr(MDSE, "macl_set", spy)
    return calls


def _fit(base, manifest, caches, **options):
    spec = RunSpec(str(manifest), caches, "mdse", {"width": 16, "num_heads": 2, "hidden": 16, **options},
                   TrainConfig(max_epochs=1, batch_size=8), 0)
    return fit_run(spec, base / "runs", log=lambda m: None)


def test_mvsa_modality_labels_are_macls_image_and_text_labels(mvsa_world, monkeypatch):
    base, manifest, caches = mvsa_world
    man = read_manifest(manifest)
    label, text_label, image_label = (dict(zip(man.ids, man.labels(c))) for c in ("label", "text_label", "image_label"))
    assert any(text_label[i] != label[i] for i in man.ids) and any(image_label[i] != label[i] for i in man.ids)

    calls = _spy(monkeypatch)
    _fit(base, manifest, caches)
    assert calls, "MDSE's contrastive loss was never computed"
    seen = set()
    for ids, labels, modality in calls:
        n = len(ids)
        image_block, text_block, fused_block = labels[:n], labels[n:2 * n], labels[2 * n:]
        assert image_block.tolist() == [image_label[i] for i in ids]
        assert text_block.tolist() == [text_label[i] for i in ids]
        assert fused_block.tolist() == [label[i] for i in ids]
        assert modality["image"].tolist() == [image_label[i] for i in ids]
        seen.update(ids)
    assert seen == {i for i, s in zip(man.ids, man.column("split")) if s == "train"}


def test_without_modality_labels_the_multimodal_label_stands_in(mvsa_world, monkeypatch, tmp_path):
    base, manifest, caches = mvsa_world
    from msa_cache.manifest import rows_to_table, write_manifest

    man = read_manifest(manifest)
    rows = man.table.to_pylist()
    for r in rows:
        r["text_label"] = r["image_label"] = None
    # Same name and ids, but another fingerprint: the labeled manifest's caches are refused for it (stale),
    # so it gets caches of its own, and its runs never mix with the labeled ones.
    plain = write_manifest(rows_to_table(rows), man.meta, tmp_path / "mvsa-multiple.parquet")
    assert read_manifest(plain).fingerprint() != man.fingerprint()
    plain_caches = _extract(plain, tmp_path / "cache")
    label = dict(zip(man.ids, man.labels("label")))

    labeled_run = _fit(base, manifest, caches).path.parent.name
    calls = _spy(monkeypatch)
    assert _fit(tmp_path, plain, plain_caches).path.parent.name != labeled_run
    for ids, labels, modality in calls:
        assert modality == {}
        assert labels.tolist() == [label[i] for i in ids] * 3
    assert calls


def test_default_monitor_comes_from_the_manifest_and_is_part_of_the_identity(mvsa_world):
    """MVSA's default is weighted-F1: a run without --monitor is the very run with --monitor weighted-f1
    (same directory, so runs made before the default moved to the manifest are still found)."""
    import json

    from msa_cache.study.compare import compare

    base, manifest, caches = mvsa_world
    assert read_manifest(manifest).default_monitor == "weighted-f1"

    def spec(monitor):
        return RunSpec(str(manifest), caches, "late", {"hidden": 8}, TrainConfig(max_epochs=1, monitor=monitor), 0)

    default = fit_run(spec(None), base / "monitor-runs", log=lambda m: None)
    explicit = fit_run(spec("weighted-f1"), base / "monitor-runs", log=lambda m: None)
    other = fit_run(spec("macro-f1"), base / "monitor-runs", log=lambda m: None)
    assert explicit.skipped and explicit.path == default.path and other.path != default.path
    assert json.loads((default.path / "config.json").read_text())["spec"]["train"]["monitor"] == "weighted-f1"
    assert json.loads((other.path / "config.json").read_text())["spec"]["train"]["monitor"] == "macro-f1"
    entries = compare(manifest, {k: Path(v) for k, v in caches.items()}, ["late"], {"hidden": [8]}, [0],
                      TrainConfig(max_epochs=1), base / "monitor-runs", log=lambda m: None)
    assert entries[0].results[0].path == default.path  # compare resolves the same default


def _record_and_card(run_path):
    import json

    config = json.loads((run_path / "config.json").read_text())
    return config.get("head_record"), (run_path / "README.md").read_text()


def test_a_run_records_which_labels_macl_contrasted(mvsa_world, tmp_path):
    """Fair reporting: a run says whether MACL contrasted per-modality labels or the multimodal label for
    all three blocks, and its model card shows it."""
    from msa_cache.manifest import rows_to_table, write_manifest

    base, manifest, caches = mvsa_world
    record, card = _record_and_card(_fit(base, manifest, caches).path)
    assert record == {"macl_labels_image": "image labels", "macl_labels_text": "text labels",
                      "macl_labels_fused": "multimodal label"}
    assert "- macl labels image: image labels" in card and "- macl labels fused: multimodal label" in card

    man = read_manifest(manifest)
    rows = man.table.to_pylist()
    for r in rows:
        r["text_label"] = r["image_label"] = None
    plain = write_manifest(rows_to_table(rows), man.meta, tmp_path / "mvsa-multiple.parquet")
    record, card = _record_and_card(_fit(tmp_path, plain, _extract(plain, tmp_path / "cache")).path)
    assert record["macl_labels_image"] == record["macl_labels_text"] == "multimodal label (no per-modality labels)"
    assert "- macl labels text: multimodal label (no per-modality labels)" in card

    record, card = _record_and_card(_fit(base, manifest, caches, macl=False).path)
    assert record == {"macl_labels": "none (--no-macl)"}
    record, _ = _record_and_card(_fit(base, manifest, caches, macl_unimodal=True).path)
    assert "macl_labels_fused" not in record and record["macl_labels_image"] == "image labels"


def test_macl_label_source_names_a_mix():
    from msa_cache.heads.mdse import macl_label_source

    assert macl_label_source("image", 3, 5) == "image labels on 3 of 8 training rows, else the multimodal label"


def test_heads_without_a_record_leave_config_json_as_it_was(mvsa_world):
    base, manifest, caches = mvsa_world
    spec = RunSpec(str(manifest), caches, "late", {"hidden": 8}, TrainConfig(max_epochs=1), 0)
    record, card = _record_and_card(fit_run(spec, base / "late-runs", log=lambda m: None).path)
    assert record is None and "macl" not in card
