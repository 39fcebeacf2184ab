"""Text decoding for files in the wild, and the named, versioned cleaning options.

Decoding: tweets come as UTF-8, GB18030 (the shared MVSA copy), cp1252, ...
`decode_bytes` tries a fixed list of encodings and never raises; it reports
whether the decode was lossless so the manifest can flag the row.

Cleaning is not applied when a manifest is built: extraction applies the named
cleaner (`--clean seed000-v2`) so one manifest serves raw and cleaned runs, and the
cleaner name is recorded in the cache provenance. A cleaner's output never changes
under its name: a fix gets a new version (seed000-v2), and the old one stays
selectable so caches and runs made with it can be reproduced and verified.
"""
from __future__ import annotations

import re
from typing import Callable

# Order matters: strict UTF-8 first (most files), then GB18030 (a superset of
# ASCII/GBK that the shared MVSA copy uses), then cp1252 for Western legacy text.
ENCODINGS = ("utf-8", "gb18030", "cp1252")


def decode_bytes(data: bytes) -> tuple[str, bool, str]:
    """Return (text, ok, encoding). ok=False means a lossy fallback decode was used."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for enc in ENCODINGS:
        try:
            return data.decode(enc), True, enc
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), False, "utf-8-replace"


_URL = re.compile(r"(https?://\S+|www\.\S+)", re.IGNORECASE)
_USER = re.compile(r"@\w+")
_HASHTAG = re.compile(r"#(\w+)")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SPACES = re.compile(r"\s+")


def _split_hashtag(match: re.Match) -> str:
    # "#MachineLearning" -> "machine learning": split camel case before lowercasing.
    return " ".join(p for p in _CAMEL.split(match.group(1).replace("_", " ")) if p)


def clean_seed000_v1(text: str) -> str:
    """The first seed-000 cleaning, kept unchanged so its caches stay reproducible. Known faults
    (fixed in v2): e-mail addresses become "john <user> .com"; the user placeholder is lowercased."""
    text = _URL.sub(" <url> ", text)
    text = _USER.sub(" <user> ", text)
    text = _HASHTAG.sub(_split_hashtag, text)
    text = text.lower()
    return _SPACES.sub(" ", text).strip()


# Tweets truncated by a retweet end in "http:…" or "https…": still a URL. "http://" glued to the
# word before it ("#Royalshttp://buff.ly/...") is one too.
_URL_V2 = re.compile(r"(https?://\S*|\bhttps?:\S*|\bhttps?…|\bwww\.\S+)", re.IGNORECASE)
# A mention starts a word; in "john@example.com" the @ follows a word character, so e-mail
# addresses are left alone.
_USER_V2 = re.compile(r"(?<![\w.+-])@\w+")
# A hashtag starts a word too ("C#" and "&#39;" are not hashtags); "##tag" is one tag.
_HASHTAG_V2 = re.compile(r"(?<![\w&])#+(\w+)")
URL_TOKEN, USER_TOKEN = "<url>", "<USER>"


def clean_seed000_v2(text: str) -> str:
    """Seed 000's four rules, in this order:

    1. URLs -> one placeholder `<url>` (also the truncated "http:…" of retweets);
    2. hashtags expanded: '#' dropped, camel case and underscores split
       (#MachineLearning -> machine learning, #ad_free -> ad free). An all-lowercase tag
       stays one word (#machinelearning -> machinelearning): no word list splits it,
       because a dictionary split would depend on the list's language and version;
    3. everything lowercased;
    4. @username -> `<USER>`, as written (upper case, after lowercasing). A mention is an
       @ at the start of a word, so e-mail addresses (john@example.com) are kept as text.
    """
    text = _URL_V2.sub(f" {URL_TOKEN} ", text)
    text = _HASHTAG_V2.sub(_split_hashtag, text)
    text = text.lower()
    text = _USER_V2.sub(f" {USER_TOKEN} ", text)
    return _SPACES.sub(" ", text).strip()


# v3 on top of v2. Twitter's ".@user" (a reply made public) is a mention wherever it stands
# ("thanks.@user" too): no e-mail address has a dot right before its @.
_USER_V3 = re.compile(r"(?<![\w.+-])@\w+|\.@\w+")
# A link cut off at the end of a truncated tweet, with nothing left of it but "http" or "https".
_TRAILING_HTTP = re.compile(r"\bhttps?\s*$", re.IGNORECASE)
# The word segmenter v3 splits all-lowercase hashtags with; its word counts are its data, so the
# version is pinned (pyproject.toml) and checked: another version could split a tag differently.
WORDSEGMENT_VERSION = "1.3.1"
_segmenter = None


def _wordsegment():
    """wordsegment, loaded once (its unigram/bigram tables take ~1.5 s); ValueError when it is missing
    or not the pinned version."""
    global _segmenter
    if _segmenter is None:
        try:
            import wordsegment
        except ImportError:
            raise ValueError("text cleaning 'seed000-v3' needs the word segmenter: "
                             f"pip install wordsegment=={WORDSEGMENT_VERSION}") from None
        version = getattr(wordsegment, "__version__", "?")
        if version != WORDSEGMENT_VERSION:
            raise ValueError(f"text cleaning 'seed000-v3' splits hashtags with wordsegment {WORDSEGMENT_VERSION}, "
                             f"found {version}: pip install wordsegment=={WORDSEGMENT_VERSION} (another version "
                             "may split tags differently, so caches would not reproduce)")
        wordsegment.load()
        _segmenter = wordsegment
    return _segmenter


def _split_hashtag_v3(match: re.Match) -> str:
    """v2's camel-case / underscore split, then every all-lowercase piece through the word segmenter
    (#machinelearning -> machine learning, #throwback_thursday -> throwback thursday)."""
    out = []
    for part in _CAMEL.split(match.group(1).replace("_", " ")):
        for piece in part.split():
            if piece.islower() and piece.isascii():
                out += _wordsegment().segment(piece) or [piece]
            else:
                out.append(piece)
    return " ".join(out)


def clean_seed000_v3(text: str) -> str:
    """v2 with three fixes (v2 stays selectable and unchanged):

    1. ".@user" is a mention too (`<USER>`), the Twitter idiom for a public reply;
    2. a bare trailing "http" / "https" (a link cut off by truncation) -> `<url>`;
    3. an all-lowercase hashtag is split into words by the pinned segmenter wordsegment
       (#machinelearning -> machine learning), as seed 000 does: it lowercases before it
       expands hashtags, so camel case alone splits none of its tags.
    """
    text = _URL_V2.sub(f" {URL_TOKEN} ", text)
    text = _TRAILING_HTTP.sub(f" {URL_TOKEN} ", text)
    text = _HASHTAG_V2.sub(_split_hashtag_v3, text)
    text = text.lower()
    text = _USER_V3.sub(f" {USER_TOKEN} ", text)
    return _SPACES.sub(" ", text).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "seed000-v1": clean_seed000_v1,  # superseded by v2; kept to reproduce and verify old caches and runs
    "seed000-v2": clean_seed000_v2,  # superseded by v3; kept likewise
    "seed000-v3": clean_seed000_v3,
}


def get_cleaner(name: str) -> Callable[[str], str]:
    try:
        return CLEANERS[name]
    except KeyError:
        raise ValueError(f"unknown text cleaning '{name}'; choose one of {sorted(CLEANERS)}") from None
