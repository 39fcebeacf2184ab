"""The 6,992 labeled meme images set (Memotion, SemEval-2020 Task 8).

    labels.csv   image_name, text_ocr, text_corrected, overall_sentiment
                 (often with an unnamed pandas index column first)
    images/      mixed JPEG / PNG / BMP

Text is text_corrected, else text_ocr (empty allowed). No split is given.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from msa_cache.manifest.builders.common import (
    BAD_FIELD, BAD_LABEL, BuilderResult, cli_options, dataset_name, find_image, fix_text, read_lenient,
    register_builder, relative, resolve_dir, skipped_line,
)
from msa_cache.manifest.schema import ManifestError

MONITOR = "macro-f1"  # what the papers on this dataset report
CLASSES = ["very_negative", "negative", "neutral", "positive", "very_positive"]
REQUIRED = ("image_name", "overall_sentiment")


@register_builder("meme")
@cli_options(
    labels="label CSV, relative to ROOT (default labels.csv)",
    image_dir="image folder, relative to ROOT (default images)",
)
def build_meme(root: Path, *, labels: str = "labels.csv", image_dir: str | None = None) -> BuilderResult:
    """Memotion-style meme set: labels.csv + images/."""
    csv_path = root / labels
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: meme label file not found; pass --root of the meme set or --labels.")
    images = resolve_dir(root, image_dir, ("images",), "image", "--image-dir")

    reader = csv.DictReader(io.StringIO(read_lenient(csv_path), newline=""))
    # Normalise header names so 'Image_Name ' matches; the unnamed index column is ignored.
    reader.fieldnames = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in reader.fieldnames]
    if missing:
        raise ManifestError(f"{csv_path}: missing column(s) {missing}; found {reader.fieldnames}.")

    rows, skipped = [], []
    try:
        records = [(f"{csv_path.name}:{reader.line_num}", record) for record in reader]
    except csv.Error as e:  # e.g. a field over the csv module's limit: an unclosed quote running on
        raise ManifestError(f"{csv_path}: line {reader.line_num + 1}: {e} (an unclosed quote?); fix that line.") from None
    for where, record in records:
        image_name = (record.get("image_name") or "").strip()
        sentiment = (record.get("overall_sentiment") or "").strip().lower().replace(" ", "_")
        if not image_name:
            skipped.append(skipped_line(where, "empty image_name", BAD_FIELD))
            continue
        if sentiment not in CLASSES:
            skipped.append(skipped_line(where, f"overall_sentiment '{sentiment}' is not one of {CLASSES}",
                                        BAD_LABEL))
            continue

        corrected, ok_corrected = fix_text(record.get("text_corrected"))
        ocr, ok_ocr = fix_text(record.get("text_ocr"))
        text, text_ok = (corrected, ok_corrected) if corrected.strip() else (ocr, ok_ocr)
        stem = Path(image_name).stem
        image = images / image_name
        if not image.is_file() and find_image(images, stem).is_file():  # listed .jpg, saved .png, etc.
            image = find_image(images, stem)
        rows.append(dict(
            id=stem, text=text.strip(), image=relative(image, root), label=CLASSES.index(sentiment),
            split=None, text_ok=text_ok,
            problem="" if text_ok else f"text not valid utf-8/gb18030/cp1252 at {where} (bad bytes replaced)",
        ))

    return BuilderResult(
        dataset=dataset_name(root.name), classes=list(CLASSES), rows=rows, sources=[csv_path],
        split_given=False, skipped=skipped, monitor=MONITOR, rows_read={csv_path.name: len(records)},
    )
