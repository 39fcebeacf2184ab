"""Text decoding for files in the wild, and the named, versioned cleaning options.

Decoding: tweets come as UTF-8, GB18030 (the shared MVSA copy), cp1252, ...
`decode_bytes` tries a fixed list of encodings and never raises; it reports
whether the decode was lossless so the manifest can flag the row.

Cleaning is not applied when a manifest is built: extraction applies the named
cleaner (`--clean seed000-v1`) so one manifest serves raw and cleaned runs, and the
cleaner name is recorded in the cache provenance.
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
    """Seed-000 tweet cleaning: URLs -> <url>, @user -> <user>, hashtags split, lowercase."""
    text = _URL.sub(" <url> ", text)
    text = _USER.sub(" <user> ", text)
    text = _HASHTAG.sub(_split_hashtag, text)
    text = text.lower()
    return _SPACES.sub(" ", text).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "seed000-v1": clean_seed000_v1,
}


def get_cleaner(name: str) -> Callable[[str], str]:
    try:
        return CLEANERS[name]
    except KeyError:
        raise ValueError(f"unknown text cleaning '{name}'; choose one of {sorted(CLEANERS)}") from None
