"""Writing a file or a folder so that a reader sees it complete or not at all: it is built under a
temporary name beside its target (`<name>.tmp-<pid>`) and renamed when done; a failure removes it."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def building_folder(out: str | Path):
    """Yield a new, empty temporary folder beside `out`; when the block ends without error it becomes
    `out` (which must be absent or an empty folder), otherwise it is removed."""
    out = Path(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier process with our pid
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty (callers check): a rename cannot replace a folder everywhere
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a hidden temporary file beside it, renamed when complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_atomic(path: str | Path, write) -> Path:
    """Like write_text_atomic for any writer: `write(tmp_path)` fills the hidden temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
