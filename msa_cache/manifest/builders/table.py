"""Any table of posts (CSV / TSV / JSONL / JSON / Parquet): how users bring their own data.

Column names come from flags. Labels may be class names (ordered by --classes, else
sorted) or integer indices; an empty label cell means unlabeled. Image paths are
relative to --root (or absolute). Without a split column the driver makes a
stratified split.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from msa_cache.manifest.builders.common import (
    BAD_FIELD, BAD_LABEL, MALFORMED, MISSING_ID, BuilderResult, SkipLine, cli_options, dataset_name, fix_text,
    read_delimited, read_lenient, register_builder, relative, skipped_line,
)
from msa_cache.manifest.schema import ManifestError
from msa_cache.settings import shown

SPLIT_NAMES = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev", "validation": "dev", "test": "test"}
_INT = re.compile(r"^[+-]?\d+(\.0*)?$")  # "2", "2.0" (pandas writes int columns with gaps as floats)


def read_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs; `where` is file:line for error messages."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_delimited(path, ",")[1]
    if suffix == ".tsv":
        return read_delimited(path, "\t", quoting=False)[1]
    if suffix in (".jsonl", ".ndjson"):
        records = []
        for line_no, line in enumerate(read_lenient(path).splitlines(), start=1):
            if line.strip():
                try:
                    records.append((f"{path.name}:{line_no}", json.loads(line)))
                except json.JSONDecodeError as e:
                    records.append((f"{path.name}:{line_no}", ValueError(f"not valid JSON ({e.msg})")))
        return records
    if suffix == ".json":
        try:
            items = json.loads(read_lenient(path))
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}).") from None
        if not isinstance(items, list):
            raise ManifestError(f"{path}: expected a JSON list of row objects.")
        return [(f"{path.name}[{n}]", item) for n, item in enumerate(items)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise ManifestError(f"{path}: not a readable Parquet file ({e}).") from None
        return [(f"{path.name} row {n}", rec) for n, rec in enumerate(rows)]
    raise ManifestError(f"{path}: unknown table type '{suffix}'; use .csv, .tsv, .jsonl, .json or .parquet.")


def is_empty(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() == ""


def label_classes(values: list, classes: list[str] | None) -> list[str]:
    """Class names: --classes if given, else range(max+1) for integer labels, else sorted names."""
    if classes:
        return classes
    seen = {str(v).strip() for v in values if not is_empty(v)}
    if seen and all(_INT.match(v) for v in seen):
        return [str(i) for i in range(max(int(float(v)) for v in seen) + 1)]
    return sorted(seen)


def to_index(value: object, classes: list[str]) -> int | None:
    """A label cell -> class index (None if empty); a class name wins over an integer reading."""
    if is_empty(value):
        return None
    text = str(value).strip()
    if text in classes:
        return classes.index(text)
    if _INT.match(text) and 0 <= int(float(text)) < len(classes):
        return int(float(text))
    raise ValueError(f"label {shown(text)} is not one of {classes} nor an index 0..{len(classes) - 1}")


@register_builder("table")
@cli_options(
    file="the table: .csv, .tsv, .jsonl, .json or .parquet (absolute, or relative to the current folder or ROOT)",
    id_col="id column (default id)",
    text_col="text column (default text)",
    text_pair_col="optional second text segment column (e.g. an aspect target), fed to the tokenizer as text_pair",
    image_col="image path column, paths relative to ROOT (default image)",
    label_col="label column: class names or 0-based indices (default label)",
    text_label_col="optional per-text label column",
    image_label_col="optional per-image label column",
    split_col="split column train/dev/test (default split; absent: stratified split)",
    classes="comma-separated class names in label-index order (default: sorted names)",
)
def build_table(
    root: Path, *, file: str, id_col: str = "id", text_col: str = "text", text_pair_col: str | None = None,
    image_col: str = "image", label_col: str = "label", text_label_col: str | None = None,
    image_label_col: str | None = None, split_col: str = "split", classes: str | list[str] | None = None,
) -> BuilderResult:
    """Your own data: a CSV/JSONL/Parquet table with id, text, image and label columns."""
    path = Path(file)
    if not path.is_file() and (root / file).is_file():
        path = root / file
    if not path.is_file():
        raise ManifestError(f"{file}: table file not found (looked in the current folder and {root}); check --file.")
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]

    records = read_records(path)
    good = [r for _, r in records if isinstance(r, dict)]
    columns = sorted({k for r in good for k in r})
    for col, flag in ((id_col, "--id-col"), (text_col, "--text-col"), (text_pair_col, "--text-pair-col"),
                      (image_col, "--image-col"), (label_col, "--label-col"), (text_label_col, "--text-label-col"),
                      (image_label_col, "--image-label-col")):
        if col is not None and col not in columns:
            raise ManifestError(f"{path}: no column '{col}' (columns: {shown(columns)}); pass {flag} NAME.")
    has_split = split_col in columns

    label_cols = [c for c in (label_col, text_label_col, image_label_col) if c is not None]
    class_names = label_classes([r.get(c) for r in good for c in label_cols], classes)
    if not class_names:
        raise ManifestError(f"{path}: column '{label_col}' has no labels; pass --classes a,b,c to name the classes.")

    rows, skipped = [], []
    for where, rec in records:
        if not isinstance(rec, dict):
            skipped.append(skipped_line(where, rec if isinstance(rec, Exception) else "not a row object", MALFORMED))
            continue
        try:
            if is_empty(rec.get(id_col)):
                raise SkipLine(MISSING_ID, f"empty '{id_col}' or '{image_col}'")
            if is_empty(rec.get(image_col)):
                raise SkipLine(BAD_FIELD, f"empty '{id_col}' or '{image_col}'")
            labels = {key: to_index(rec.get(col), class_names) if col else None
                      for key, col in (("label", label_col), ("text_label", text_label_col),
                                       ("image_label", image_label_col))}
            split = None
            if has_split:
                split = SPLIT_NAMES.get(str(rec.get(split_col) or "").strip().lower())
                if split is None:
                    raise SkipLine(BAD_FIELD, f"split {shown(rec.get(split_col))} is not train/dev/test")
        except ValueError as e:
            skipped.append(skipped_line(where, e, getattr(e, "reason", BAD_LABEL)))
            continue
        text, text_ok = fix_text(rec.get(text_col))
        # An empty pair cell is no second segment (None), not an empty one.
        pair, pair_ok = fix_text(rec.get(text_pair_col)) if text_pair_col and not is_empty(rec.get(text_pair_col)) \
            else (None, True)
        text_ok = text_ok and pair_ok
        image, _ = fix_text(rec.get(image_col))
        rows.append(dict(
            id=str(rec[id_col]).strip(), text=text, text_pair=pair, image=relative(root / image.strip(), root),
            split=split, text_ok=text_ok,
            problem="" if text_ok else f"text not valid utf-8/gb18030/cp1252 at {where} (bad bytes replaced)",
            **labels,
        ))

    return BuilderResult(
        dataset=dataset_name(path.stem), classes=class_names, rows=rows, sources=[path],
        split_given=has_split, skipped=skipped, rows_read={path.name: len(records)},
    )
