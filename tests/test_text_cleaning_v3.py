"""`--clean seed000-v3`: v2 plus ".@user" mentions, a bare trailing http(s) as a cut-off link, and all-lowercase
hashtags split by the pinned word segmenter; v1/v2 unchanged. On made-up and on the real MVSA-Single tweets."""
import json
import re

import pytest

from msa_cache.manifest import decode_bytes, get_cleaner
from msa_cache.manifest.text import (
    USER_TOKEN, WORDSEGMENT_VERSION, clean_seed000_v2, clean_seed000_v3,
)

pytest.importorskip("wordsegment")


@pytest.mark.parametrize("raw, cleaned", [
    (".@JohnDoe thanks", f"{USER_TOKEN} thanks"),                                   # .@user is a mention
    ("so true.@Bob ..@jc", f"so true {USER_TOKEN} . {USER_TOKEN}"),
    ("great game tonight http", "great game tonight <url>"),                        # a cut-off link
    ("RT @x: wow HTTPS ", f"rt {USER_TOKEN} : wow <url>"),
    ("the http protocol", "the http protocol"),                                     # not at the end: a word
    ("#machinelearning #nowplaying", "machine learning now playing"),              # lowercase tags segmented
    ("#throwback_thursday #MachineLearning #NFL", "throwback thursday machine learning nfl"),
    ("mail john@example.com or a.b+c@x.org", "mail john@example.com or a.b+c@x.org"),  # e-mails untouched
    ("C# and &#39; are not tags", "c# and &#39; are not tags"),
])
def test_seed000_v3_rules(raw, cleaned):
    assert clean_seed000_v3(raw) == cleaned
    assert get_cleaner("seed000-v3")(raw) == cleaned


def test_v2_is_unchanged_under_its_name():
    assert clean_seed000_v2(".@JohnDoe #machinelearning http") == ".@johndoe machinelearning http"
    assert get_cleaner("seed000-v2") is clean_seed000_v2


def test_the_segmenter_version_is_pinned():
    import wordsegment

    assert wordsegment.__version__ == WORDSEGMENT_VERSION
    pyproject = (__import__("pathlib").Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"wordsegment=={WORDSEGMENT_VERSION}"' in pyproject


def test_another_segmenter_version_is_refused(monkeypatch):
    import wordsegment

    import msa_cache.manifest.text as text

    monkeypatch.setattr(text, "_segmenter", None)
    monkeypatch.setattr(wordsegment, "__version__", "9.9")
    with pytest.raises(ValueError, match=f"wordsegment=={WORDSEGMENT_VERSION}"):
        clean_seed000_v3("#machinelearning")


def test_real_tweets(mvsa_root):
    """On the 4,511 posts of the CLMLF split files: 36 contain ".@user", 70 end in a bare http/https; v3 leaves
    no ".@" and no trailing http, and changes nothing that v2 gives a post with none of the three cases."""
    texts = [item["text"] for split in ("train", "dev", "test")  # the split files' text, as `manifest clmlf` reads it
             for item in json.loads(decode_bytes((mvsa_root / "splits" / f"{split}.json").read_bytes())[0])]
    assert len(texts) == 4511
    dot_at = [t for t in texts if re.search(r"\.@\w", t)]
    trailing = [t for t in texts if re.search(r"\bhttps?\s*$", t, re.IGNORECASE)]
    assert (len(dot_at), len(trailing)) == (36, 70)
    cleaned = [clean_seed000_v3(t) for t in texts]
    assert not any(re.search(r"\.@\w", c) for c in cleaned)
    assert not any(re.search(r"\bhttps?$", c) for c in cleaned)
    assert all(c.endswith("<url>") for t, c in zip(texts, cleaned) if t in trailing)
    plain = [t for t in texts if t not in dot_at and t not in trailing and not re.search(r"(?<![\w&])#", t)]
    assert all(clean_seed000_v3(t) == clean_seed000_v2(t) for t in plain)
    tags = [t for t in texts if re.search(r"(?<![\w&])#+[a-z]{8,}\b", t)]  # long all-lowercase tags
    assert sum(clean_seed000_v3(t) != clean_seed000_v2(t) for t in tags) > len(tags) // 2
