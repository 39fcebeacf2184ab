"""Twitter multimodal sarcasm detection (Cai et al. 2019, the HFM data set), in two layouts.

original (Cai et al.'s release):
    text/train.txt, text/valid2.txt, text/test2.txt
        one Python-literal list per line: ['<id>', '<text>', label]
        (valid2/test2 lines carry two labels; the last is the sarcasm label)
    dataset_image/<id>.jpg

clmlf (CLMLF's re-export, Li et al. 2022):
    train.json, valid.json, test.json    [{"id": "...", "text": "...", "label": 0}, ...]
                                          (`emotion_label` is read where `label` is absent)
    dataset_image/<id>.jpg (or images/, data/)

Both give 19,816 / 2,410 / 2,409 rows. The layout is found from the files in ROOT
(train.json -> clmlf, else text/ -> original) unless --layout says which.
Lines are parsed with ast.literal_eval (a data file must never run code); a
malformed line or object is skipped and listed as file:line.
"""
from __future__ import annotations

import ast
from pathlib import Path

from msa_cache.manifest.builders.common import (
    BAD_LABEL, MISSING_ID, MISSING_LABEL, BuilderResult, SkipLine, cli_options, dataset_name, find_image,
    register_builder, relative, resolve_dir, skipped_line,
)
from msa_cache.manifest.builders.clmlf import json_split_rows
from msa_cache.manifest.schema import ManifestError
from msa_cache.manifest.text import decode_bytes

MONITOR = "macro-f1"  # what the papers on this dataset report
CLASSES = ["non-sarcastic", "sarcastic"]
SPLIT_FILES = {"train": "train.txt", "dev": "valid2.txt", "test": "test2.txt"}
JSON_FILES = {"train": "train.json", "dev": "valid.json", "test": "test.json"}
IMAGE_DIRS = ("dataset_image", "images", "data")
LAYOUTS = ("original", "clmlf")


def parse_label(label: object) -> int:
    if label is None:
        raise SkipLine(MISSING_LABEL, "no label")
    if isinstance(label, str) and label.strip() in ("0", "1"):
        label = int(label)
    if isinstance(label, bool) or label not in (0, 1):
        raise SkipLine(BAD_LABEL, f"label {label!r} is not 0 or 1")
    return int(label)


def parse_line(line: str) -> tuple[str, str, int]:
    """"['123', 'text', 0]" -> ('123', 'text', 0); raises ValueError saying what is wrong."""
    try:
        item = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not a Python literal list") from None
    if not isinstance(item, (list, tuple)) or len(item) < 3:
        raise ValueError("expected ['<id>', '<text>', label]")
    post_id, text, label = item[0], item[1], item[-1]
    if str(post_id).strip() == "":
        raise SkipLine(MISSING_ID, "expected a non-empty id and a text string")
    if not isinstance(text, str):
        raise ValueError("expected a non-empty id and a text string")
    return str(post_id).strip(), text, parse_label(label)


def detect_layout(root: Path, text_dir: str) -> str:
    if (root / JSON_FILES["train"]).is_file():
        return "clmlf"
    if (root / text_dir).is_dir():
        return "original"
    raise ManifestError(f"{root}: neither train.json (CLMLF layout) nor {text_dir}/ (original layout) found; "
                        f"pass --root of the HFM data, or --layout and --text-dir.")


def _original_rows(root: Path, text_dir: str, images: Path) -> tuple[list[dict], list[str], list[Path]]:
    texts = resolve_dir(root, text_dir, (), "text", "--text-dir")
    rows, skipped, sources = [], [], []
    for split, file_name in SPLIT_FILES.items():
        path = texts / file_name
        if not path.is_file():
            raise ManifestError(f"{path}: not found; hfm needs {', '.join(SPLIT_FILES.values())} in {texts}.")
        sources.append(path)
        for line_no, raw in enumerate(path.read_bytes().splitlines(), start=1):
            line, text_ok, _ = decode_bytes(raw)  # per line, so one bad line does not taint the file
            if not line.strip():
                continue
            where = f"{relative(path, root)}:{line_no}"
            try:
                post_id, text, label = parse_line(line.strip())
            except ValueError as e:
                skipped.append(skipped_line(where, e))
                continue
            rows.append(dict(
                id=post_id, text=text, image=relative(find_image(images, post_id), root),
                label=label, split=split, text_ok=text_ok,
                problem="" if text_ok else f"text not valid utf-8/gb18030/cp1252 at {where} (bad bytes replaced)",
            ))
    return rows, skipped, sources


def _clmlf_rows(root: Path, images: Path) -> tuple[list[dict], list[str], list[Path]]:
    rows, skipped, sources = [], [], []
    for split, file_name in JSON_FILES.items():
        path = root / file_name
        if not path.is_file():
            raise ManifestError(f"{path}: not found; hfm's CLMLF layout needs {', '.join(JSON_FILES.values())}.")
        sources.append(path)
        more, bad = json_split_rows(path, split, images, root, lambda item: parse_label(
            item["label"] if "label" in item else item.get("emotion_label")))
        rows += more
        skipped += bad
    return rows, skipped, sources


@register_builder("hfm")
@cli_options(
    layout="original (text/*.txt) or clmlf (train/valid/test.json) (default: found from the files in ROOT)",
    text_dir="original layout: folder with train.txt/valid2.txt/test2.txt, relative to ROOT (default text)",
    image_dir="image folder, relative to ROOT (default dataset_image, else images, else data)",
)
def build_hfm(root: Path, *, layout: str | None = None, text_dir: str = "text",
              image_dir: str | None = None) -> BuilderResult:
    """Twitter sarcasm (HFM): text/{train,valid2,test2}.txt or CLMLF's {train,valid,test}.json, + dataset_image/."""
    if layout is not None and layout not in LAYOUTS:
        raise ManifestError(f"--layout '{layout}': choose one of {', '.join(LAYOUTS)}.")
    layout = layout or detect_layout(root, text_dir)
    images = resolve_dir(root, image_dir, IMAGE_DIRS, "image", "--image-dir")
    rows, skipped, sources = (_clmlf_rows(root, images) if layout == "clmlf"
                              else _original_rows(root, text_dir, images))
    return BuilderResult(
        dataset=dataset_name(root.name), classes=list(CLASSES), rows=rows, sources=sources,
        split_given=True, skipped=skipped, monitor=MONITOR,
    )
