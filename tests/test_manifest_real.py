"""The real MVSA-Single copy (../shared/data/mvsa-single) through the clmlf builder."""
from msa_cache.manifest import read_manifest
from msa_cache.manifest.build import build_manifest


def test_real_mvsa_single(mvsa_root, tmp_path):
    out = tmp_path / "mvsa-single.parquet"
    summary = build_manifest("clmlf", root=mvsa_root, output=out)

    m = read_manifest(out)
    assert len(m) == 4511
    assert summary.split_sizes() == {"train": 3611, "dev": 450, "test": 450}
    assert summary.counts["train"] == {"positive": 2147, "neutral": 376, "negative": 1088}
    assert summary.counts["test"] == {"unlabeled": 450}
    assert all(label is None for label, split in zip(m.column("label"), m.column("split")) if split == "test")
    assert all(m.column("image_ok")) and all(m.column("text_ok")) and summary.bad_rows == []
    assert m.meta.classes == ["positive", "neutral", "negative"] and m.meta.split_rule == "given"
    assert m.meta.root == str(mvsa_root.resolve()) and m.meta.source_fingerprint
