"""Names that become one path component (manifest stems, dataset, encoder, cache and head
names): one validator, so nothing a user types can write outside the folder it was given."""
from __future__ import annotations

import os

from msa_cache.errors import UserError, shown

MAX_NAME_LENGTH = 200  # well below every file system's 255-byte limit, leaving room for suffixes


def check_name(name: str, what: str = "name", where: str | None = None) -> str:
    """`name` if it is a single, ordinary path component; UserError otherwise."""
    text = str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif text in (".", ".."):
        problem = f"{shown(text)} is not a folder name"
    elif "/" in text or "\\" in text or (os.sep in text) or (os.altsep and os.altsep in text):
        problem = f"{shown(text)} contains a path separator"
    elif "\0" in text or any(ord(c) < 32 for c in text):
        problem = f"{shown(text)} contains control characters"
    elif len(text.encode("utf-8", errors="surrogatepass")) > MAX_NAME_LENGTH:
        problem = f"is longer than {MAX_NAME_LENGTH} bytes"
    if problem:
        raise UserError(f"{what} {problem}", where,
                        "use a plain name of letters, digits, '-', '_' or '.' (it becomes a folder or file name)")
    return text
