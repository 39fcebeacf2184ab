"""Target-oriented multimodal sentiment: Twitter-15 and Twitter-17 as released with TomBERT
(Yu & Jiang, IJCAI 2019).

    train.tsv, dev.tsv, test.tsv   tab-separated, no quoting, header
                                   `index  #1 Label  #2 ImageID  #3 String  #3 String`
        #1 Label     0 negative, 1 neutral, 2 positive
        #2 ImageID   the image's file name in the image folder
        #3 String    the sentence with the target replaced by `$T$`, then the target
    <image folder>/<ImageID>       separate image release (twitter2015_images/, twitter2017_images/)

One row per (sentence, target): a tweet with three targets gives three rows that
share the sentence and the image, so ids are `<split>-<index>`. The task is
target-oriented, so the encoder sees the standard sentence-pair input: `text` is
the sentence with `$T$` put back to the target, `text_pair` the target
(`[CLS] sentence [SEP] target [SEP]`). Rows: Twitter-15 3,179 / 1,122 / 1,037,
Twitter-17 3,562 / 1,176 / 1,234.
"""
from __future__ import annotations

from pathlib import Path

from msa_cache.manifest.builders.common import (
    BuilderResult, register_builder, cli_options, dataset_name, fix_text, read_lenient, relative, resolve_dir,
)
from msa_cache.manifest.schema import ManifestError

MONITOR = "macro-f1"  # what the papers on this dataset report (with accuracy)
CLASSES = ["negative", "neutral", "positive"]  # TomBERT's labels 0, 1, 2
SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
TARGET_MARK = "$T$"
N_FIELDS = 5


def image_dir_candidates(root: Path) -> tuple[str, ...]:
    """ROOT/images, else the release's sibling folder: absa_data/twitter2015 -> ../twitter2015_images."""
    return ("images", f"../{root.name}_images")


def parse_row(fields: list[str]) -> tuple[str, int, str, str, str]:
    """[index, label, image, sentence, target] -> (index, label, image, text, target); raises ValueError."""
    if len(fields) != N_FIELDS:
        raise ValueError(f"expected {N_FIELDS} tab-separated fields, got {len(fields)}")
    index, label, image, sentence, target = (f.strip() for f in fields)
    if not index:
        raise ValueError("empty index")
    if label not in ("0", "1", "2"):
        raise ValueError(f"label '{label}' is not 0, 1 or 2")
    if not image:
        raise ValueError("empty ImageID")
    if TARGET_MARK not in sentence:
        raise ValueError(f"the sentence has no {TARGET_MARK} where the target goes")
    if not target:
        raise ValueError("empty target")
    return index, int(label), image, sentence.replace(TARGET_MARK, target), target


def read_split(path: Path, split: str, images: Path, root: Path) -> tuple[list[dict], list[str]]:
    if not path.is_file():
        raise ManifestError(f"{path}: not found; tmsc needs {', '.join(SPLIT_FILES.values())} in --root.")
    rows, skipped = [], []
    for line_no, line in enumerate(read_lenient(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if line_no == 1 and fields[0].strip().lower() == "index":
            continue  # the header
        where = f"{path.name}:{line_no}"
        try:
            index, label, image, text, target = parse_row(fields)
        except ValueError as e:
            skipped.append(f"{where}: {e}")
            continue
        text, text_ok = fix_text(text)
        target, target_ok = fix_text(target)
        ok = text_ok and target_ok
        rows.append(dict(
            id=f"{split}-{index}", text=text, text_pair=target, image=relative(images / image, root),
            label=label, split=split, text_ok=ok,
            problem="" if ok else f"text not valid utf-8/gb18030/cp1252 at {where} (bad bytes replaced)",
        ))
    return rows, skipped


@register_builder("tmsc")
@cli_options(image_dir="image folder (relative to ROOT, or absolute) [default ROOT/images, else ../<ROOT name>_images]")
def build_tmsc(root: Path, *, image_dir: str | None = None) -> BuilderResult:
    """Twitter-15/17 target-oriented sentiment (TomBERT's train/dev/test.tsv) + an image folder."""
    images = resolve_dir(root, image_dir, image_dir_candidates(root), "image", "--image-dir")
    rows, skipped, sources, read = [], [], [], {}
    for split, file_name in SPLIT_FILES.items():
        path = root / file_name
        sources.append(path)
        split_rows, split_skipped = read_split(path, split, images, root)
        rows += split_rows
        skipped += split_skipped
        read[file_name] = len(split_rows) + len(split_skipped)
    return BuilderResult(
        dataset=dataset_name(root.name), classes=list(CLASSES), rows=rows, sources=sources,
        split_given=True, skipped=skipped, monitor=MONITOR, rows_read=read,
    )
