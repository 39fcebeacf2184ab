"""Target-oriented multimodal sentiment: Twitter-15 and Twitter-17 as released with TomBERT
(Yu & Jiang, IJCAI 2019).

    train.tsv, dev.tsv, test.tsv   tab-separated, no quoting, header
                                   `index  #1 Label  #2 ImageID  #3 String  #3 String`
        #1 Label     0 negative, 1 neutral, 2 positive
        #2 ImageID   the image's file name in the image folder
        #3 String    the sentence with the target replaced by `$T$`, then the target
    <image folder>/<ImageID>       separate image release (twitter2015_images/, twitter2017_images/)

TomBERT's repository keeps the text as absa_data/twitter2015 and absa_data/twitter
(Twitter-17), the images come as IJCAI2019_data/twitter2015_images and
twitter2017_images. The year comes from the folder name (`twitter` is Twitter-17),
else from the ImageIDs (Twitter-17's look like 17_06_10389.jpg); the image folder is
ROOT/images, else `twitter<year>_images` beside ROOT or above it (also inside an
IJCAI2019_data folder there); the dataset is named twitter2015 / twitter2017.

One row per (sentence, target): a tweet with three targets gives three rows that
share the sentence and the image, so ids are `<split>-<index>`. The task is
target-oriented, so the encoder sees the standard sentence-pair input, `text_pair`
the target (`[CLS] sentence [SEP] target [SEP]`). `text` is the sentence with `$T$`
put back to the target (`--target-marker restore`, the default), or with `$T$` left
in it (`keep`, TomBERT's own input; the dataset name gets `-marker`). Rows:
Twitter-15 3,179 / 1,122 / 1,037, Twitter-17 3,562 / 1,176 / 1,234.
"""
from __future__ import annotations

import re
from pathlib import Path

from msa_cache.manifest.builders.common import (
    BAD_FIELD, BAD_LABEL, MISSING_ID, BuilderResult, SkipLine, cli_options, dataset_name, fix_text, read_lenient,
    register_builder, relative, resolve_dir, skipped_line,
)
from msa_cache.manifest.schema import ManifestError
from msa_cache.settings import shown

MONITOR = "macro-f1"  # what the papers on this dataset report (with accuracy)
CLASSES = ["negative", "neutral", "positive"]  # TomBERT's labels 0, 1, 2
SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
TARGET_MARK = "$T$"
N_FIELDS = 5
TARGET_MARKERS = ("restore", "keep")  # put the target back where $T$ is / leave $T$ in the sentence
IMAGE_RELEASE = "IJCAI2019_data"  # the folder TomBERT's image download unpacks to
_YEAR_IN_NAME = re.compile(r"twitter[-_]?(?:20)?(15|17)$", re.IGNORECASE)
_TWITTER17_IMAGE = re.compile(r"^\d+_\d+_")  # Twitter-17's ImageIDs: 17_06_10389.jpg, 16_05_20_317.jpg


def dataset_year(root: Path, image_ids: list[str]) -> str | None:
    """"2015" / "2017" from the folder name (TomBERT's `twitter` is Twitter-17), else from the ImageIDs."""
    m = _YEAR_IN_NAME.search(root.name)
    if m:
        return "20" + m.group(1)
    if root.name.lower() == "twitter":
        return "2017"
    if image_ids:
        return "2017" if all(_TWITTER17_IMAGE.match(i) for i in image_ids) else (
            "2015" if all(i.split(".")[0].isdigit() for i in image_ids) else None)
    return None


def image_dir_candidates(root: Path, year: str | None = None) -> tuple[str, ...]:
    """ROOT/images, else the release's folder beside ROOT or above it: absa_data/twitter ->
    ../twitter2017_images, ../../twitter2017_images, ../../IJCAI2019_data/twitter2017_images."""
    names = [f"twitter{year}_images"] if year else []
    names.append(f"{root.name}_images")
    out = ["images"]
    for up in ("..", "../.."):
        for name in dict.fromkeys(names):
            out += [f"{up}/{name}", f"{up}/{IMAGE_RELEASE}/{name}"]
    return tuple(out)


def parse_row(fields: list[str], marker: str = "restore") -> tuple[str, int, str, str, str]:
    """[index, label, image, sentence, target] -> (index, label, image, text, target); raises ValueError.
    marker "restore": text = the sentence with the target in place of $T$; "keep": the sentence as given."""
    if len(fields) != N_FIELDS:
        raise ValueError(f"expected {N_FIELDS} tab-separated fields, got {len(fields)}")
    index, label, image, sentence, target = (f.strip() for f in fields)
    if not index:
        raise SkipLine(MISSING_ID, "empty index")
    if label not in ("0", "1", "2"):
        raise SkipLine(BAD_LABEL, f"label '{label}' is not 0, 1 or 2")
    if not image:
        raise SkipLine(BAD_FIELD, "empty ImageID")
    if TARGET_MARK not in sentence:
        raise SkipLine(BAD_FIELD, f"the sentence has no {TARGET_MARK} where the target goes")
    if not target:
        raise SkipLine(BAD_FIELD, "empty target")
    text = sentence.replace(TARGET_MARK, target) if marker == "restore" else sentence
    return index, int(label), image, text, target


def _lines(path: Path):
    """(line number, fields) of a split file's data lines (blank lines and the header left out)."""
    if not path.is_file():
        raise ManifestError(f"{path}: not found; tmsc needs {', '.join(SPLIT_FILES.values())} in --root.")
    for line_no, line in enumerate(read_lenient(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if line_no == 1 and fields[0].strip().lower() == "index":
            continue  # the header
        yield line_no, fields


def read_split(path: Path, split: str, images: Path, root: Path, marker: str = "restore") -> tuple[list[dict], list[str]]:
    rows, skipped = [], []
    for line_no, fields in _lines(path):
        where = f"{path.name}:{line_no}"
        try:
            index, label, image, text, target = parse_row(fields, marker)
        except ValueError as e:
            skipped.append(skipped_line(where, e))
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


def _image_ids(root: Path) -> list[str]:
    path = root / SPLIT_FILES["train"]
    return [f[2].strip() for _, f in _lines(path) if len(f) == N_FIELDS and f[2].strip()] if path.is_file() else []


@register_builder("tmsc")
@cli_options(image_dir="image folder (relative to ROOT, or absolute) [default ROOT/images, else twitter<year>_images "
                       "beside or above ROOT, also in IJCAI2019_data/]",
             target_marker="text of a row: 'restore' puts the target where $T$ is [default]; 'keep' leaves $T$ "
                           "in the sentence (TomBERT's own input); the target is the text pair either way")
def build_tmsc(root: Path, *, image_dir: str | None = None, target_marker: str | None = None) -> BuilderResult:
    """Twitter-15/17 target-oriented sentiment (TomBERT's train/dev/test.tsv) + an image folder."""
    marker = target_marker or "restore"
    if marker not in TARGET_MARKERS:
        raise ManifestError(f"--target-marker {shown(target_marker)}: choose one of {', '.join(TARGET_MARKERS)}.")
    year = dataset_year(root, _image_ids(root))
    images = resolve_dir(root, image_dir, image_dir_candidates(root, year), "image", "--image-dir")
    rows, skipped, sources, read = [], [], [], {}
    for split, file_name in SPLIT_FILES.items():
        path = root / file_name
        sources.append(path)
        split_rows, split_skipped = read_split(path, split, images, root, marker)
        rows += split_rows
        skipped += split_skipped
        read[file_name] = len(split_rows) + len(split_skipped)
    name = f"twitter{year}" if year else dataset_name(root.name)
    return BuilderResult(
        dataset=name + ("-marker" if marker == "keep" else ""), classes=list(CLASSES), rows=rows, sources=sources,
        split_given=True, skipped=skipped, monitor=MONITOR, rows_read=read,
    )
