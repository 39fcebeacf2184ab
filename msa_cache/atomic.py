"""Writing a file or a folder so that a reader sees it complete or not at all: it is built under a
temporary name beside its target (`<name>.tmp-<pid>`, or `.<name>.tmp-<pid>` for a file) and renamed
when done; a failure removes it. A process killed in between (kill -9, a power cut) cannot clean up,
so the next write of the same target removes the temporaries of processes that are gone."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (True when that cannot be known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # exists under another user, or unknowable
        return True
    return True


def stale_temporaries(folder: str | Path, pattern: re.Pattern) -> list[Path]:
    """Entries of `folder` whose name matches `pattern` (group 1: the writer's pid) and whose writer is gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if (m := pattern.fullmatch(p.name)) and not pid_alive(int(m.group(1))))


def remove_stale(folder: str | Path, pattern: re.Pattern) -> list[Path]:
    """Remove stale_temporaries (folders or files); the removed paths."""
    removed = []
    for p in stale_temporaries(folder, pattern):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def building_folder(out: str | Path):
    """Yield a new, empty temporary folder beside `out`; when the block ends without error it becomes
    `out` (which must be absent or an empty folder), otherwise it is removed."""
    out = Path(out)
    remove_stale(out.parent, re.compile(re.escape(out.name) + r"\.tmp-(\d+)"))
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
    remove_stale(path.parent, re.compile(r"\." + re.escape(path.name) + r"\.tmp-(\d+)"))
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
