"""What every builder returns, and the small helpers they share.

A builder reads one dataset layout and returns `BuilderResult`: row dicts in the
manifest's columns (minus the image checks, which the driver in build.py does for
every format alike), the ordered class names, and the source files to fingerprint.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from msa_cache.manifest.schema import ManifestError
from msa_cache.manifest.text import decode_bytes

# Tried in this order when `<id>.jpg` is not there (datasets mix formats).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# Why an input line or entry did not become a row; a build lists its skips under these.
MALFORMED = "malformed line"  # cannot be parsed (wrong field count, not JSON, not an object)
MISSING_ID = "missing id"
BAD_LABEL = "bad label"  # a label that is not one of the classes
MISSING_LABEL = "missing label"  # an entry without a label in a file whose entries are labeled
BAD_FIELD = "bad field"  # another required field empty or malformed (image name, target, split)
DUPLICATE_ID = "duplicate id"
SKIP_REASONS = (MALFORMED, MISSING_ID, BAD_LABEL, MISSING_LABEL, BAD_FIELD, DUPLICATE_ID)


class Skipped(str):
    """One skipped input line as listed ("file:line: why"), with the reason it is listed under."""

    reason: str

    def __new__(cls, text: str, reason: str = MALFORMED):
        obj = super().__new__(cls, text)
        obj.reason = reason
        return obj


class SkipLine(ValueError):
    """A parser's refusal of one input line, with its reason (a plain ValueError counts as MALFORMED)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def skipped_line(where: str, error: Exception | str, reason: str | None = None) -> Skipped:
    """The listed skip for an input line: "where: why", under the error's reason (or the given one)."""
    return Skipped(f"{where}: {error}", reason or getattr(error, "reason", MALFORMED))


def skip_reason(entry: str) -> str:
    return getattr(entry, "reason", MALFORMED)


@dataclass
class BuilderResult:
    dataset: str  # default dataset name (the --name flag overrides it)
    classes: list[str]
    rows: list[dict]  # id, text, image (relative to root), label, text_label, image_label, split, text_ok, problem
    sources: list[Path]  # label/text files the rows came from (images are added by the driver)
    split_given: bool  # False: the driver makes a stratified split
    skipped: list[str] = field(default_factory=list)  # Skipped "file:line: why" for input lines left out
    rows_read: dict[str, int] = field(default_factory=dict)  # file name -> records read from it (shown vs kept)
    dropped: Counter = field(default_factory=Counter)  # reason -> rows left out on purpose (e.g. label conflict)
    # The dev metric the dataset's papers report, recorded in the manifest as fit/compare's default
    # --monitor: MVSA and TumEmo weighted-F1; Twitter-15/17, HFM and the memes macro-F1.
    monitor: str = ""
    notes: list[str] = field(default_factory=list)  # what the builder chose that the user did not say (a fold)


# format name -> builder; filled by @register_builder as builders/__init__.py imports each builder module
BUILDERS: dict[str, Callable[..., BuilderResult]] = {}


def register_builder(name: str, submission: Callable[[list[str], list[str], list[int]], list[dict]] | None = None):
    """Register a builder function as the manifest format `name` (`msa-cache manifest <name>`).

    submission: how test predictions are written for this dataset's own scorer (`compare --export-test`):
    (class names, row ids, predicted class indices) -> the JSON list of one file; None: the generic
    [{"id", "label": <class name>}]."""
    def register(fn: Callable[..., BuilderResult]) -> Callable[..., BuilderResult]:
        if name in BUILDERS:
            raise ValueError(f"manifest format '{name}' registered twice")
        fn.format_name, fn.submission = name, submission
        BUILDERS[name] = fn
        return fn
    return register


def cli_options(**help_texts: str) -> Callable:
    """Declare a builder's keyword arguments as CLI flags (name -> help); cli/manifest.py reads them."""
    def attach(fn: Callable) -> Callable:
        fn.cli_options = help_texts
        return fn
    return attach


def dataset_name(text: str) -> str:
    """A file-name-safe default dataset name: 'MVSA_Single' -> 'mvsa-single'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "dataset"


def relative(path: Path, root: Path) -> str:
    """Path as stored in the manifest: relative to the root ('..' allowed for an image dir outside it)."""
    return Path(os.path.relpath(path, root)).as_posix()


def resolve_dir(root: Path, given: str | Path | None, candidates: tuple[str, ...], what: str, flag: str) -> Path:
    """The flag's folder if given (relative to root unless absolute), else the first candidate that exists."""
    if given is not None:
        path = root / given  # an absolute `given` replaces root
        if not path.is_dir():
            raise ManifestError(f"{path}: {what} folder not found; check {flag}.")
        return path
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    tried = ", ".join(str(root / c) for c in candidates)
    raise ManifestError(f"{root}: no {what} folder (tried {tried}); pass {flag} DIR.")


def find_image(image_dir: Path, stem: str) -> Path:
    """`<stem>.jpg`, else the same stem with another image extension; the .jpg path if none exists
    (the image check then flags the row as missing)."""
    jpg = image_dir / f"{stem}.jpg"
    if jpg.is_file():
        return jpg
    for ext in IMAGE_EXTENSIONS[1:] + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        p = image_dir / f"{stem}{ext}"
        if p.is_file():
            return p
    return jpg


def read_text_file(path: Path) -> tuple[str, bool, str]:
    """A per-post text file -> (text, ok, problem); never raises."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return "", False, f"text unreadable: {path.name} ({e.strerror or e})"
    text, ok, _ = decode_bytes(data)
    return text.strip(), ok, "" if ok else f"text not valid utf-8/gb18030/cp1252: {path.name} (bad bytes replaced)"


def read_lenient(path: Path) -> str:
    """Whole file as str, undecodable bytes kept as surrogates so one bad cell cannot spoil the file;
    `fix_text` then decodes each field on its own."""
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    except OSError as e:
        raise ManifestError(f"{path}: cannot read ({e.strerror or e}); check the path and permissions.") from None


def read_delimited(path: Path, delimiter: str = ",", quoting: bool = True
                   ) -> tuple[list[str], list[tuple[str, dict | ValueError]]]:
    """A CSV (RFC 4180 quoting) or, with quoting=False, a TSV read as plain tab-separated lines (as
    TomBERT's files are: a `"` is text, never a quote) -> (header, [(file:line, record or ValueError)]).

    A row with another number of fields than the header, and a quoted field running over several lines
    (an unclosed quote swallows the rows after it), come back as a ValueError naming the line, for the
    builder to list as skipped; nothing is silently merged or lost."""
    reader = csv.reader(io.StringIO(read_lenient(path), newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    out: list[tuple[str, dict | ValueError]] = []
    header: list[str] | None = None
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if header is None:
                header = fields
                continue
            where = f"{path.name}:{start}"
            if end > start:
                out.append((where, ValueError(f"a quoted field runs on to line {end} (an unclosed quote?); "
                                              "put the field on one line")))
            elif len(fields) != len(header):
                out.append((where, ValueError(f"{len(fields)} fields where the header has {len(header)}")))
            else:
                out.append((where, dict(zip(header, fields))))
    except csv.Error as e:  # e.g. a field over the csv module's limit: an unclosed quote running to the end
        raise ManifestError(f"{path}: line {end + 1}: {e} (an unclosed quote?); fix that line.") from None
    return header or [], out


def replace_surrogates(text: str) -> str:
    """Lone surrogates (not text; Parquet cannot store them) -> U+FFFD."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def fix_text(value: object) -> tuple[str, bool]:
    """A field read by `read_lenient` (or any value) -> (text, ok); non-UTF-8 bytes go through decode_bytes."""
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: empty text
        return "", True
    text = str(value)
    try:
        text.encode("utf-8")
        return text, True
    except UnicodeEncodeError:  # surrogates from surrogateescape: the field was not UTF-8
        try:
            text, ok, _ = decode_bytes(text.encode("utf-8", errors="surrogateescape"))
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (e.g. JSON "\ud83d" alone)
            return replace_surrogates(text), False
        return text, ok
