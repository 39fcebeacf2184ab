"""Twitter multimodal sarcasm detection (Cai et al. 2019, the HFM data set).

    text/train.txt, text/valid2.txt, text/test2.txt
        one Python-literal list per line: ['<id>', '<text>', label]
        (valid2/test2 lines carry two labels; the last is the sarcasm label)
    dataset_image/<id>.jpg

Lines are parsed with ast.literal_eval (a data file must never run code); a
malformed line is skipped and listed as file:line.
"""
from __future__ import annotations

import ast
from pathlib import Path

from msa_cache.manifest.builders.common import (
    BuilderResult, cli_options, dataset_name, find_image, relative, resolve_dir,
)
from msa_cache.manifest.schema import ManifestError
from msa_cache.manifest.text import decode_bytes

CLASSES = ["non-sarcastic", "sarcastic"]
SPLIT_FILES = {"train": "train.txt", "dev": "valid2.txt", "test": "test2.txt"}


def parse_line(line: str) -> tuple[str, str, int]:
    """"['123', 'text', 0]" -> ('123', 'text', 0); raises ValueError saying what is wrong."""
    try:
        item = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not a Python literal list") from None
    if not isinstance(item, (list, tuple)) or len(item) < 3:
        raise ValueError("expected ['<id>', '<text>', label]")
    post_id, text, label = item[0], item[1], item[-1]
    if not isinstance(text, str) or str(post_id).strip() == "":
        raise ValueError("expected a non-empty id and a text string")
    if isinstance(label, bool) or label not in (0, 1):
        raise ValueError(f"label {label!r} is not 0 or 1")
    return str(post_id).strip(), text, int(label)


@cli_options(
    text_dir="folder with train.txt/valid2.txt/test2.txt, relative to ROOT (default text)",
    image_dir="image folder, relative to ROOT (default dataset_image)",
)
def build_hfm(root: Path, *, text_dir: str = "text", image_dir: str | None = None) -> BuilderResult:
    """Twitter sarcasm (HFM): text/{train,valid2,test2}.txt + dataset_image/."""
    texts = resolve_dir(root, text_dir, (), "text", "--text-dir")
    images = resolve_dir(root, image_dir, ("dataset_image",), "image", "--image-dir")

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
                skipped.append(f"{where}: {e}")
                continue
            rows.append(dict(
                id=post_id, text=text, image=relative(find_image(images, post_id), root),
                label=label, split=split, text_ok=text_ok,
                problem="" if text_ok else f"text not valid utf-8/gb18030/cp1252 at {where} (bad bytes replaced)",
            ))

    return BuilderResult(
        dataset=dataset_name(root.name), classes=list(CLASSES), rows=rows, sources=sources,
        split_given=True, skipped=skipped,
    )
