"""Seed 000's text cleaning (`--clean seed000-v2`): its four rules, on made-up and real tweets."""
import re

import pytest

from msa_cache.manifest import decode_bytes, get_cleaner
from msa_cache.manifest.text import USER_TOKEN, clean_seed000_v1, clean_seed000_v2


@pytest.mark.parametrize("raw, cleaned", [
    ("Hello World", "hello world"),                                              # lowercase
    ("see https://t.co/AbC and www.Example.com/x", "see <url> and <url>"),       # URLs -> one placeholder
    ("RT @Foo_Bar: great http:…", f"rt {USER_TOKEN} : great <url>"),              # truncated retweet URL
    ("#Royalshttp://buff.ly/1", "royals <url>"),
    ("@Alice hi @bob", f"{USER_TOKEN} hi {USER_TOKEN}"),                         # not lowercased
    ("#MachineLearning rocks", "machine learning rocks"),                       # camel case split
    ("#ad_free #LOVE #Top10Songs ##Two", "ad free love top10 songs two"),
    ("#machinelearning", "machinelearning"),                                      # all-lowercase: one word
    ("mail john@example.com or a.b+c@x.org", "mail john@example.com or a.b+c@x.org"),  # e-mails untouched
    ("C# and &#39; are not tags", "c# and &#39; are not tags"),
])
def test_seed000_v2_rules(raw, cleaned):
    assert clean_seed000_v2(raw) == cleaned
    assert get_cleaner("seed000-v2")(raw) == cleaned


def test_seed000_v1_is_kept_unchanged_for_old_caches():
    # v1's known fault stays, so a cache recorded as seed000-v1 is reproduced exactly.
    assert clean_seed000_v1("john@example.com #MachineLearning @Bob") == "john <user> .com machine learning <user>"
    assert get_cleaner("seed000-v1") is clean_seed000_v1


def _tweet(root, post_id) -> str:
    return decode_bytes((root / "data" / f"{post_id}.txt").read_bytes())[0]


def test_real_tweets(mvsa_root):
    c = clean_seed000_v2
    t5031 = c(_tweet(mvsa_root, 5031))  # RT @WaterAidUK: ... #publicspeaking? ... Email speakers@wateraid.org. http:…
    assert t5031.startswith(f"rt {USER_TOKEN} : passionate about publicspeaking?")
    assert "speakers@wateraid.org" in t5031 and t5031.endswith("<url>") and "http" not in t5031
    t2126 = c(_tweet(mvsa_root, 2126))  # ... w/#LOVE ... Write-MaggieTails@gmail.com RT
    assert "w/love" in t2126 and "write-maggietails@gmail.com" in t2126 and USER_TOKEN not in t2126
    t1077 = c(_tweet(mvsa_root, 1077))  # RT @NonstopTV: We're with @2CELLOS at #theONEshow ... #Celloverse
    assert t1077.count(USER_TOKEN) == 2 and "celloverse" in t1077 and "#" not in t1077


def test_every_real_tweet_obeys_the_rules(mvsa_root):
    for path in sorted((mvsa_root / "data").glob("*.txt")):
        out = clean_seed000_v2(decode_bytes(path.read_bytes())[0])
        rest = out.replace(USER_TOKEN, "")
        assert rest == rest.lower(), path.name
        assert not re.search(r"(?<![\w.+-])@\w", rest), path.name          # every mention replaced
        assert not re.search(r"(?<![\w&])#\w", rest), path.name            # every hashtag expanded
        assert not re.search(r"https?://|www\.", rest, re.IGNORECASE), path.name
