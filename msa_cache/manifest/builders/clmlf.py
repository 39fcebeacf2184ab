"""The CLMLF split of MVSA (Li et al. 2022), also used by MDSE and INFIG.

    train.json, dev.json, test.json   [{"id": "5", "text": "...", "emotion_label": 0}, ...]
                                      in ROOT, ROOT/splits or, as CLMLF's own checkout keeps
                                      them, ROOT/10-flod-1 (dataset/data/MVSA-multiple/10-flod-1/;
                                      the first fold folder found, named in the summary; --splits-dir)
    data/<id>.jpg, images/<id>.jpg or dataset_image/<id>.jpg (--image-dir)

MVSA-Single (4,511 posts) and MVSA-Multiple (17,024 posts; 13,624 / 1,700 / 1,700)
come in this layout.

emotion_label: 0 positive, 1 neutral, 2 negative. A split file without labels (the
shared copy's test.json) gives unlabeled rows. Text comes from the JSON.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from msa_cache.manifest.builders.common import (
    BAD_LABEL, MALFORMED, MISSING_ID, MISSING_LABEL, BuilderResult, SkipLine, cli_options, dataset_name, find_image,
    fix_text, read_lenient, register_builder, relative, resolve_dir, skipped_line,
)
from msa_cache.manifest.schema import ManifestError

MONITOR = "weighted-f1"  # what the papers on MVSA report
CLASSES = ["positive", "neutral", "negative"]
SPLIT_FILES = {"train": "train.json", "dev": "dev.json", "test": "test.json"}


FOLD_DIR = re.compile(r"^\d+-flod-(\d+)$")  # CLMLF's fold folders, spelled as in its repository


def fold_dirs(root: Path) -> list[Path]:
    """ROOT's CLMLF fold folders with a train.json (10-flod-1, 10-flod-2, ...), in fold order."""
    found = [p for p in root.iterdir() if p.is_dir() and FOLD_DIR.match(p.name) and (p / "train.json").is_file()] \
        if root.is_dir() else []
    return sorted(found, key=lambda p: int(FOLD_DIR.match(p.name).group(1)))


def find_splits_dir(root: Path, given: str | None) -> Path:
    if given is not None:
        return resolve_dir(root, given, (), "split files", "--splits-dir")
    for folder in (root, root / "splits"):
        if (folder / "train.json").is_file():
            return folder
    folds = fold_dirs(root)
    if folds:
        return folds[0]
    raise ManifestError(f"{root}: no train.json in ROOT, ROOT/splits or a fold folder ROOT/10-flod-1 (CLMLF's "
                        "checkout: --root dataset/data/MVSA-multiple); pass --root that folder, or "
                        "--splits-dir 10-flod-1 (any folder with train/dev/test.json).")


def read_split_file(path: Path) -> list:
    if not path.is_file():
        raise ManifestError(f"{path}: split file not found; clmlf needs {', '.join(SPLIT_FILES.values())}.")
    try:
        items = json.loads(read_lenient(path))
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); fix or re-export the file.") from None
    if not isinstance(items, list):
        raise ManifestError(f"{path}: expected a JSON list of {{id, text, emotion_label}} objects.")
    return items


def parse_label(value: object) -> int | None:
    """0/1/2 (int or numeric string) -> int, missing -> None; raises SkipLine (BAD_LABEL) otherwise."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(CLASSES):
        raise SkipLine(BAD_LABEL, f"emotion_label {value!r} is not 0, 1 or 2")
    return value


def json_split_rows(path: Path, split: str, images: Path, root: Path,
                    label_of: Callable[[dict], int | None]) -> tuple[list[dict], list[str]]:
    """Manifest rows of one CLMLF-style split file (a json list of {id, text, <label>}), and the
    entries skipped with the reason; `label_of` reads an entry's label (None: it has none; ValueError:
    skip it). A file is labeled when any entry has a label: there an entry without one is skipped
    (MISSING_LABEL), not made an unlabeled row; a file with no label at all (a withheld test split)
    gives unlabeled rows."""
    rows, skipped = [], []
    items = read_split_file(path)
    labeled_file = any(_has_label(item, label_of) for item in items)
    for n, item in enumerate(items):
        where = f"{path.name}[{n}]"
        if not isinstance(item, dict):
            skipped.append(skipped_line(where, "not an object with an 'id'", MALFORMED))
            continue
        if item.get("id") in (None, "") or not str(item["id"]).strip():
            skipped.append(skipped_line(where, "no 'id'", MISSING_ID))
            continue
        try:
            label = label_of(item)
        except ValueError as e:
            skipped.append(skipped_line(where, e, getattr(e, "reason", BAD_LABEL)))
            continue
        if label is None and labeled_file:
            skipped.append(skipped_line(where, f"no label, while other entries of {path.name} have one",
                                        MISSING_LABEL))
            continue
        post_id = str(item["id"]).strip()
        text, text_ok = fix_text(item.get("text"))
        rows.append(dict(
            id=post_id, text=text, image=relative(find_image(images, post_id), root),
            label=label, split=split, text_ok=text_ok,
            problem="" if text_ok else f"text not valid utf-8/gb18030/cp1252 in {where} (bad bytes replaced)",
        ))
    return rows, skipped


def _has_label(item: object, label_of: Callable[[dict], int | None]) -> bool:
    if not isinstance(item, dict):
        return False
    try:
        return label_of(item) is not None
    except ValueError:  # a bad label is still a label: the file is labeled
        return True


def clmlf_submission(classes: list[str], ids: list[str], preds: list[int]) -> list[dict]:
    """Test predictions as CLMLF's own split files label them: {"id", "emotion_label"} with CLMLF's ids
    (the builder's class order is CLMLF's: 0 positive, 1 neutral, 2 negative)."""
    missing = [c for c in classes if c not in CLASSES]
    if missing:
        raise ValueError(f"classes {missing} are not CLMLF's {list(CLASSES)}")
    label_ids = [CLASSES.index(c) for c in classes]
    return [{"id": i, "emotion_label": label_ids[p]} for i, p in zip(ids, preds)]


@register_builder("clmlf", submission=clmlf_submission)
@cli_options(
    splits_dir="folder with train/dev/test.json (default ROOT, else ROOT/splits)",
    image_dir="image folder, relative to ROOT (default data, else images, else dataset_image)",
)
def build_clmlf(root: Path, *, splits_dir: str | None = None, image_dir: str | None = None) -> BuilderResult:
    """CLMLF split files (train/dev/test.json) plus an image folder."""
    split_dir = find_splits_dir(root, splits_dir)
    notes = []
    if splits_dir is None and FOLD_DIR.match(split_dir.name):
        others = [p.name for p in fold_dirs(root) if p != split_dir]
        notes.append(f"split files from {split_dir.name}" + (
            f" (also here: {', '.join(others)}; --splits-dir picks another fold)" if others else ""))
    images = resolve_dir(root, image_dir, ("data", "images", "dataset_image"), "image", "--image-dir")

    rows, skipped, sources = [], [], []
    for split, file_name in SPLIT_FILES.items():
        path = split_dir / file_name
        sources.append(path)
        more, bad = json_split_rows(path, split, images, root, lambda item: parse_label(item.get("emotion_label")))
        rows += more
        skipped += bad

    return BuilderResult(
        dataset=dataset_name(root.name), classes=list(CLASSES), rows=rows, sources=sources,
        split_given=True, skipped=skipped, monitor=MONITOR, notes=notes,
    )
