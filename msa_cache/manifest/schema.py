"""The manifest: one Parquet file describing one dataset with its split.

This module is the only place that writes, reads and validates manifests;
everything else (extraction, fit, predict) goes through `read_manifest`.

Columns (one row per image+text post):

    id           string   unique within the manifest
    text         string   decoded raw text ("" allowed; cleaning is applied later,
                          at extraction, so one manifest serves raw and cleaned runs)
    text_pair    string?  optional second text segment (target-oriented data: the target),
                          fed to the tokenizer as its `text_pair`; null where there is none.
                          Manifests written before this column read as all-null.
    image        string   image path relative to the dataset root
    label        int64?   index into `classes`; null for unlabeled rows
    text_label   int64?   per-modality labels where the dataset has them, else null
    image_label  int64?
    split        string   "train" | "dev" | "test"
    image_ok     bool     the image exists and decodes
    text_ok      bool     the text file exists and decoded without loss
    problem      string   why a flag is false ("" when both are true)

File metadata (Parquet key b"msa_cache", JSON), see `ManifestMeta`:
dataset name, ordered class names, dataset root, builder and its arguments, a
fingerprint of the source files, how the split was made, library version, and
the metric the dataset's papers report (`monitor`: fit/compare's default).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from msa_cache.errors import UserError
from msa_cache.metrics import DEFAULT_MONITOR, MONITOR_NAMES
from msa_cache.names import check_name
from msa_cache.provenance import from_saved

SCHEMA_VERSION = 1
META_KEY = b"msa_cache"
SPLITS = ("train", "dev", "test")

ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("text_pair", pa.string()),
        ("image", pa.string()),
        ("label", pa.int64()),
        ("text_label", pa.int64()),
        ("image_label", pa.int64()),
        ("split", pa.string()),
        ("image_ok", pa.bool_()),
        ("text_ok", pa.bool_()),
        ("problem", pa.string()),
    ]
)
COLUMNS = tuple(ARROW_SCHEMA.names)
_NON_NULL = ("id", "text", "image", "split", "image_ok", "text_ok", "problem")
# Columns added after schema version 1 was first written: absent in older files, read as all-null.
_OPTIONAL = ("text_pair",)
# Hashed into the fingerprint only where some row has a value, so manifests without them keep the
# fingerprint (and the caches) they had before these columns existed.
_FINGERPRINT_IF_PRESENT = ("text_pair", "text_label", "image_label")


class ManifestError(UserError, ValueError):
    """A manifest (or the data it is built from) is unusable; the message says why and what to do."""


@dataclass
class ManifestMeta:
    dataset: str
    classes: list[str]
    root: str
    builder: str
    builder_args: dict[str, Any] = field(default_factory=dict)
    source_fingerprint: str = ""
    split_rule: str = ""  # e.g. "given" or "stratified 70/10/20 seed=0"
    monitor: str = ""  # the dev metric the dataset's papers report ("weighted-f1", "macro-f1"); "" = not set
    library_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ManifestMeta":
        return from_saved(cls, json.loads(text))


@dataclass
class Manifest:
    """A validated manifest: the Arrow table plus its metadata."""

    table: pa.Table
    meta: ManifestMeta
    path: Path | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def name(self) -> str:
        """Short name used for cache/ and runs/ folders: the file stem, else the dataset name."""
        return self.path.stem if self.path is not None else self.meta.dataset

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def root(self) -> Path:
        return Path(self.meta.root)

    @property
    def default_monitor(self) -> str:
        """The dev metric fit/compare/finetune select and sort by unless --monitor says otherwise."""
        return self.meta.monitor or DEFAULT_MONITOR

    def column(self, name: str) -> list:
        return self.table.column(name).to_pylist()

    @property
    def ids(self) -> list[str]:
        return self.column("id")

    def labels(self, column: str = "label") -> np.ndarray:
        """Integer labels with -1 where the row is unlabeled."""
        return np.array([(-1 if v is None else v) for v in self.column(column)], dtype=np.int64)

    def image_path(self, relative: str) -> Path:
        return self.root / relative

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.array(self.column("split")) == split)

    @property
    def has_text_pair(self) -> bool:
        return self.table.column("text_pair").null_count < self.table.num_rows

    def text_pairs(self) -> list[str | None] | None:
        """The second text segment per row (None where a row has none: it is tokenised as one segment), or
        None for a manifest without them."""
        return list(self.column("text_pair")) if self.has_text_pair else None

    def fingerprint(self) -> str:
        """Hash of the content that matters to caches and runs: ids, texts (and text pairs), images,
        labels (and per-modality labels), splits, classes."""
        return self._hash(("id", "text", "image", "label", "split", "image_ok"), _FINGERPRINT_IF_PRESENT,
                          prefix=json.dumps(self.meta.classes).encode())

    def inputs_fingerprint(self, modality: str | None = None) -> str:
        """Hash of what the encoders read: ids, texts (and text pairs), images and their usability.
        Labels and splits are not in it: a cache stays valid when only they change.
        modality "text" / "image": only what an encoder of that modality reads (ids and texts with their
        pairs / ids and images), so an image cache stays valid when only texts change and vice versa;
        None or "both" (CLIP reads both): all of it."""
        if modality == "text":
            return self._hash(("id", "text", "text_ok"), ("text_pair",), prefix=b"text")
        if modality == "image":
            return self._hash(("id", "image", "image_ok"), (), prefix=b"image")
        return self._hash(("id", "text", "image", "image_ok", "text_ok"), ("text_pair",))

    def _hash(self, columns: tuple, if_present: tuple, prefix: bytes = b"") -> str:
        h = hashlib.sha256(prefix)
        for col in columns:
            h.update(json.dumps(self.column(col), ensure_ascii=False).encode("utf-8"))
        for col in if_present:
            if self.table.column(col).null_count < self.table.num_rows:
                h.update(col.encode())
                h.update(json.dumps(self.column(col), ensure_ascii=False).encode("utf-8"))
        return h.hexdigest()[:16]

    def bad_rows(self) -> list[dict]:
        """Rows whose image or text is unusable, with the reason."""
        keep = [
            {"id": i, "split": s, "image_ok": io, "text_ok": to, "problem": p}
            for i, s, io, to, p in zip(
                self.column("id"), self.column("split"), self.column("image_ok"),
                self.column("text_ok"), self.column("problem"),
            )
            if not (io and to)
        ]
        return keep


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build the Arrow table from row dicts; missing optional columns become null/defaults."""
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for r in rows:
        cols["id"].append(str(r["id"]))
        cols["text"].append(r.get("text") or "")
        pair = r.get("text_pair")
        cols["text_pair"].append(None if pair is None else str(pair))
        cols["image"].append(str(r["image"]))
        for c in ("label", "text_label", "image_label"):
            v = r.get(c)
            cols[c].append(None if v is None else int(v))
        cols["split"].append(r["split"])
        cols["image_ok"].append(bool(r.get("image_ok", True)))
        cols["text_ok"].append(bool(r.get("text_ok", True)))
        cols["problem"].append(r.get("problem") or "")
    return pa.table(cols, schema=ARROW_SCHEMA)


def validate(table: pa.Table, meta: ManifestMeta, where: str = "manifest") -> None:
    """Raise ManifestError with a one-line message naming the problem and the row."""
    missing = [c for c in COLUMNS if c not in table.column_names and c not in _OPTIONAL]
    if missing:
        raise ManifestError(f"{where}: missing columns {missing}; rebuild it with `msa-cache manifest`.")
    if not meta.classes:
        raise ManifestError(f"{where}: metadata has no class names; rebuild it with `msa-cache manifest`.")
    for c in _NON_NULL:
        nulls = table.column(c).null_count
        if nulls:
            raise ManifestError(f"{where}: column '{c}' has {nulls} null values; it must be filled in every row.")
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ManifestError(f"{where}: id '{dup}' appears more than once; ids must be unique.")
    n_classes = len(meta.classes)
    for c in ("label", "text_label", "image_label"):
        for row, v in enumerate(table.column(c).to_pylist()):
            if v is not None and not 0 <= v < n_classes:
                raise ManifestError(
                    f"{where}: row {row} (id {ids[row]}) has {c}={v}, outside 0..{n_classes - 1} "
                    f"for classes {meta.classes}."
                )
    for row, s in enumerate(table.column("split").to_pylist()):
        if s not in SPLITS:
            raise ManifestError(f"{where}: row {row} (id {ids[row]}) has split '{s}'; expected one of {SPLITS}.")
    if meta.monitor and meta.monitor not in MONITOR_NAMES:
        raise ManifestError(f"{where}: metadata monitor '{meta.monitor}' is not one of {MONITOR_NAMES}; "
                            f"rebuild it with `msa-cache manifest`.")


def with_optional_columns(table: pa.Table) -> pa.Table:
    """Add the optional columns an older manifest lacks, as all-null."""
    for name in _OPTIONAL:
        if name not in table.column_names:
            column = ARROW_SCHEMA.field(name)
            table = table.append_column(column, pa.nulls(table.num_rows, column.type))
    return table


def write_manifest(table: pa.Table, meta: ManifestMeta, path: str | Path) -> Path:
    """Validate, then write atomically (temporary file + rename: nothing half-written is left)."""
    from msa_cache import __version__

    path = Path(path)
    check_name(path.stem, "manifest file name", where=path)  # the stem names its cache/ and runs/ folders
    meta.library_version = meta.library_version or __version__
    table = with_optional_columns(table)
    validate(table, meta, where=str(path))
    table = table.select(list(COLUMNS)).cast(ARROW_SCHEMA)
    table = table.replace_schema_metadata({META_KEY: meta.to_json().encode("utf-8")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def _read_meta(raw: bytes, path: Path) -> ManifestMeta:
    """The file's metadata, checked: JSON, an object, the required keys with the right types."""
    hint = "rebuild it with `msa-cache manifest`."
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise ManifestError(f"{path}: its msa_cache metadata is not JSON ({type(e).__name__}); {hint}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: its msa_cache metadata is not a JSON object; {hint}")
    required = [f.name for f in dataclasses.fields(ManifestMeta) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise ManifestError(f"{path}: its msa_cache metadata misses {missing}; {hint}")
    types = {"dataset": str, "root": str, "builder": str, "classes": list, "builder_args": dict, "schema_version": int}
    wrong = [k for k, kind in types.items() if k in data and not isinstance(data[k], kind)]
    if wrong or not all(isinstance(c, str) for c in data["classes"]):
        raise ManifestError(f"{path}: its msa_cache metadata has wrong types ({wrong or ['classes']}); {hint}")
    return ManifestMeta.from_json(json.dumps(data))


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest written by `write_manifest`."""
    path = Path(path)
    check_name(path.stem, "manifest file name", where=path)  # the stem names its cache/ and runs/ folders
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest; build one with `msa-cache manifest <format> --root DIR`.")
    try:
        # ParquetFile, not read_table: one file needs no pyarrow.dataset (which imports pandas), so
        # `manifest info` and every command that reads a manifest start faster.
        table = pq.ParquetFile(path).read()
    except Exception as e:  # pyarrow raises several types for a bad file
        raise ManifestError(f"{path}: not a readable Parquet file ({e}); rebuild it with `msa-cache manifest`.")
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ManifestError(f"{path}: no msa_cache metadata; it was not written by `msa-cache manifest`.")
    meta = _read_meta(raw, path)
    table = with_optional_columns(table)
    if meta.schema_version > SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: schema version {meta.schema_version} is newer than this msa-cache reads "
            f"({SCHEMA_VERSION}); upgrade msa-cache."
        )
    validate(table, meta, where=str(path))
    return Manifest(table=table.select(list(COLUMNS)), meta=meta, path=path)


def fingerprint_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """Hash of source files (relative name, size, mtime-free content hash of small files).

    Text/label files are hashed by content; large binary files (images) by name and
    size only, so fingerprinting 50k images stays fast.
    """
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        # relpath, not relative_to: an image folder or table may sit outside the root.
        rel = os.path.relpath(p, root) if root is not None else str(p)
        h.update(rel.encode("utf-8"))
        try:
            size = p.stat().st_size
        except OSError:
            h.update(b"<missing>")
            continue
        h.update(str(size).encode())
        if size <= 1 << 20 and p.suffix.lower() in {".txt", ".json", ".csv", ".jsonl", ".tsv", ".parquet"}:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]
