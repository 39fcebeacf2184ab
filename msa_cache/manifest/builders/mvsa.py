"""The original MVSA release (Niu et al. 2016): MVSA-Single and MVSA-Multiple.

    data/<id>.jpg, data/<id>.txt
    labelResultAll.txt    header, then `ID<TAB>text,image` (Single) or three such
                          annotator columns (Multiple), labels positive/neutral/negative

Per modality the majority over annotators wins (no majority: row dropped); then the
text and image labels are merged as in Xu & Mao 2017 (MultiSentiNet), which gives
the 4,511 (Single) / 17,024 (Multiple) pairs the papers use. No split is given.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from msa_cache.manifest.builders.common import (
    BAD_LABEL, BuilderResult, cli_options, dataset_name, find_image, read_text_file, register_builder,
    relative, resolve_dir, skipped_line,
)
from msa_cache.manifest.schema import ManifestError

MONITOR = "weighted-f1"  # what the papers on this dataset report
CLASSES = ["positive", "neutral", "negative"]  # CLMLF's 0/1/2
POSITIVE, NEUTRAL, NEGATIVE = range(3)


def majority(votes: list[int]) -> int | None:
    """The label more than half of the annotators gave, else None."""
    label, count = Counter(votes).most_common(1)[0]
    return label if count * 2 > len(votes) else None


def merge(text_label: int, image_label: int) -> int | None:
    """Xu & Mao 2017: agree -> that label; neutral + polar -> the polar one; positive vs negative -> None."""
    if text_label == image_label:
        return text_label
    if NEUTRAL in (text_label, image_label):
        return text_label if image_label == NEUTRAL else image_label
    return None


def parse_annotation(field: str) -> tuple[int, int]:
    """'positive,neutral' -> (0, 1); raises ValueError with a readable reason."""
    parts = [p.strip().lower() for p in field.split(",")]
    if len(parts) != 2 or any(p not in CLASSES for p in parts):
        raise ValueError(f"expected 'text,image' labels from {CLASSES}, got '{field.strip()}'")
    return CLASSES.index(parts[0]), CLASSES.index(parts[1])


@register_builder("mvsa")
@cli_options(
    label_file="annotation file, relative to ROOT (default labelResultAll.txt)",
    image_dir="folder with <id>.jpg and <id>.txt, relative to ROOT (default data)",
)
def build_mvsa(root: Path, *, label_file: str = "labelResultAll.txt", image_dir: str | None = None) -> BuilderResult:
    """MVSA-Single / MVSA-Multiple original release (labelResultAll.txt + data/)."""
    label_path = root / label_file
    if not label_path.is_file():
        raise ManifestError(f"{label_path}: MVSA annotation file not found; pass --root of the MVSA release "
                            f"(with labelResultAll.txt and data/) or --label-file.")
    data_dir = resolve_dir(root, image_dir, ("data",), "MVSA data", "--image-dir")
    where = label_path.name

    rows, skipped, dropped = [], [], Counter()
    lines = label_path.read_bytes().decode("utf-8", errors="replace").splitlines()
    for line_no, line in enumerate(lines, start=1):
        fields = [f for f in line.strip().split("\t") if f.strip()]
        if not fields or (line_no == 1 and fields[0].strip().lower() == "id"):
            continue  # blank line or the header
        post_id = fields[0].strip()
        try:
            if len(fields) < 2:
                raise ValueError("no annotations after the id")
            votes = [parse_annotation(f) for f in fields[1:]]
        except ValueError as e:
            skipped.append(skipped_line(f"{where}:{line_no}", e, BAD_LABEL))
            continue

        text_label = majority([t for t, _ in votes])
        image_label = majority([i for _, i in votes])
        if text_label is None or image_label is None:
            dropped["no annotator majority"] += 1
            continue
        label = merge(text_label, image_label)
        if label is None:
            dropped["text and image labels conflict (positive vs negative)"] += 1
            continue

        text, text_ok, problem = read_text_file(data_dir / f"{post_id}.txt")
        rows.append(dict(
            id=post_id, text=text, image=relative(find_image(data_dir, post_id), root),
            label=label, text_label=text_label, image_label=image_label, split=None,
            text_ok=text_ok, problem=problem,
        ))

    sources = [label_path] + [data_dir / f"{r['id']}.txt" for r in rows]
    return BuilderResult(
        dataset=dataset_name(root.name), classes=list(CLASSES), rows=rows, sources=sources,
        split_given=False, skipped=skipped, monitor=MONITOR, dropped=dropped,
    )
