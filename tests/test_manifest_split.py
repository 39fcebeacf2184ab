"""Stratified split and image checks, on their own."""
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from msa_cache.manifest import ManifestError
from msa_cache.manifest.images import check_image, check_images
from msa_cache.manifest.splitting import parse_split, split_rule, stratified_split


def labelled_ids():
    ids = [f"p{i}" for i in range(1000)]
    labels = [0] * 600 + [1] * 300 + [2] * 90 + [None] * 10
    return ids, labels


def test_split_proportions_per_class():
    ids, labels = labelled_ids()
    splits = stratified_split(ids, labels, parse_split("70/10/20"), seed=0)
    counts = Counter(zip(labels, splits))
    assert [counts[(0, s)] for s in ("train", "dev", "test")] == [420, 60, 120]
    assert [counts[(1, s)] for s in ("train", "dev", "test")] == [210, 30, 60]
    assert [counts[(2, s)] for s in ("train", "dev", "test")] == [63, 9, 18]
    assert [counts[(None, s)] for s in ("train", "dev", "test")] == [7, 1, 2]  # unlabeled: own stratum


def test_split_is_deterministic_and_order_free():
    ids, labels = labelled_ids()
    fractions = parse_split("80/10/10")
    first = dict(zip(ids, stratified_split(ids, labels, fractions, seed=0)))
    again = dict(zip(ids, stratified_split(ids, labels, fractions, seed=0)))
    order = np.random.default_rng(1).permutation(len(ids))
    shuffled = dict(zip([ids[i] for i in order],
                        stratified_split([ids[i] for i in order], [labels[i] for i in order], fractions, seed=0)))
    other_seed = dict(zip(ids, stratified_split(ids, labels, fractions, seed=1)))
    assert first == again == shuffled
    assert first != other_seed
    assert Counter(first.values()) == Counter(other_seed.values()) == {"train": 800, "dev": 100, "test": 100}


def test_parse_split():
    assert parse_split("70/10/20") == pytest.approx((0.7, 0.1, 0.2))
    assert parse_split("0.8/0.1/0.1") == pytest.approx((0.8, 0.1, 0.1))
    assert split_rule(parse_split("70/10/20"), 5) == "stratified 70/10/20 seed=5"
    for bad in ("70/30", "a/b/c", "0/50/50", "-10/60/50"):
        with pytest.raises(ManifestError, match="expected three train/dev/test shares"):
            parse_split(bad)


def test_image_checks(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(good)
    jpeg = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:600])
    text = tmp_path / "not-an-image.jpg"
    text.write_text("hello")

    assert check_image(good) == (True, "")
    ok, problem = check_image(jpeg)
    assert not ok and problem.startswith("image truncated: cut.jpg")
    assert check_image(tmp_path / "gone.jpg") == (False, "image missing: gone.jpg")
    ok, problem = check_image(text)
    assert not ok and problem.startswith("image undecodable: not-an-image.jpg")
    # The thread pool keeps the input order.
    assert [ok for ok, _ in check_images([good, jpeg, good, text] * 5, workers=3)] == [True, False, True, False] * 5
