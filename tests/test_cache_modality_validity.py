"""Per-modality cache validity: each encoder's cache records the fingerprint of what its modality read, so
an image cache stays valid (for fit, verify and a re-run of extract) when only the texts or their pairs
change, a text cache when only the images change; caches made before that was recorded keep verifying."""
import json

import pytest
from PIL import Image

from msa_cache.cache import open_cache
from msa_cache.cache.verify import manifest_mismatch
from msa_cache.encoders.synthetic import ArrayEncoder, random_rows
from msa_cache.errors import UserError
from msa_cache.extract import extract
from msa_cache.fit.features import open_features
from msa_cache.manifest import ManifestMeta, read_manifest, rows_to_table, write_manifest

QUIET = {"shard_size": 8, "batch_size": 4, "workers": 0, "progress": False, "log": lambda m: None}
TEXT = {"text/cls": (4,), "text/tokens": (3, 4), "text/mask": (3,)}
IMAGE = {"image/pooled": (5,)}


def _rows(root, n=12, text=lambda i: f"post {i}", pair=lambda i: f"target {i}", image=lambda i: f"img/{i}.jpg"):
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (4, 4), (i * 9, 0, 0)).save(root / "img" / f"{i}.jpg")
        rows.append({"id": str(i), "text": text(i), "text_pair": pair(i), "image": image(i), "label": i % 3,
                     "split": "train" if i < 8 else "dev"})
    return rows


def _write(root, rows):
    meta = ManifestMeta(dataset="m", classes=["a", "b", "c"], root=str(root), builder="test")
    return read_manifest(write_manifest(rows_to_table(rows), meta, root / "m.parquet"))


def _encoders():
    return [ArrayEncoder("t", "text", TEXT, random_rows(TEXT, 1, (1, 3))),
            ArrayEncoder("i", "image", IMAGE, random_rows(IMAGE, 2))]


@pytest.fixture
def world(tmp_path):
    manifest = _write(tmp_path, _rows(tmp_path))
    extract(manifest, _encoders(), tmp_path / "cache", **QUIET)
    return tmp_path, manifest, {"text": tmp_path / "cache/m/t", "image": tmp_path / "cache/m/i"}


def _problem(path, manifest):
    cache = open_cache(path)
    return manifest_mismatch(cache.ids, cache.attrs, manifest)


def test_image_cache_outlives_a_text_change_and_the_text_cache_does_not(world):
    root, manifest, caches = world
    attrs = open_cache(caches["image"]).attrs
    assert attrs["modality_inputs_fingerprint"] == manifest.inputs_fingerprint("image")
    edited = _write(root, _rows(root, text=lambda i: f"edited {i}"))
    assert edited.fingerprint() != manifest.fingerprint()
    assert _problem(caches["image"], edited) is None
    assert "changed since extraction in what this text encoder read" in _problem(caches["text"], edited)
    with pytest.raises(UserError, match="stale cache"):
        open_features(edited, caches)
    open_features(edited, {"image": caches["image"]})  # the image cache alone is fine


def test_dropping_the_text_pair_keeps_the_image_cache(world):
    root, manifest, caches = world
    unpaired = _write(root, [{**r, "text_pair": None} for r in _rows(root)])
    assert _problem(caches["image"], unpaired) is None and _problem(caches["text"], unpaired) is not None
    # extract again for the new manifest: the image cache is kept as it is (nothing re-encoded), the text
    # cache folder is refused (another setup) and goes to a fresh --out
    before = sorted((p.name, p.stat().st_mtime_ns) for p in caches["image"].glob("shard-*.h5"))
    report = extract(unpaired, [_encoders()[1]], root / "cache", **QUIET)
    assert report.encoders[0].shards_skipped == [0, 1]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in caches["image"].glob("shard-*.h5")) == before


def test_text_cache_outlives_an_image_change(world):
    root, manifest, caches = world
    (root / "img2").mkdir()
    for i in range(12):
        Image.new("RGB", (4, 4), (0, i * 9, 0)).save(root / "img2" / f"{i}.jpg")
    moved = _write(root, _rows(root, image=lambda i: f"img2/{i}.jpg"))
    assert _problem(caches["text"], moved) is None and _problem(caches["image"], moved) is not None


def test_old_caches_keep_verifying_by_all_their_inputs(world):
    """A cache made before modality_inputs_fingerprint: valid for a relabeled manifest, stale for a text edit."""
    root, manifest, caches = world
    for folder in caches.values():
        index = folder / "index.json"
        data = json.loads(index.read_text())
        del data["attrs"]["modality_inputs_fingerprint"]
        index.write_text(json.dumps(data))
    relabeled = _write(root, [{**r, "label": (r["label"] + 1) % 3} for r in _rows(root)])
    assert _problem(caches["image"], relabeled) is None and _problem(caches["text"], relabeled) is None
    edited = _write(root, _rows(root, text=lambda i: f"edited {i}"))
    assert "changed since extraction" in _problem(caches["image"], edited)


def test_the_unscoped_inputs_fingerprint_is_unchanged(world):
    """inputs_fingerprint() without a modality is the hash old caches recorded (texts + images)."""
    _, manifest, caches = world
    assert open_cache(caches["text"]).attrs["inputs_fingerprint"] == manifest.inputs_fingerprint()
    assert manifest.inputs_fingerprint() == manifest.inputs_fingerprint("both")
    assert len({manifest.inputs_fingerprint(m) for m in (None, "text", "image")}) == 3
