"""Checking an Optuna journal file before `tune` opens it.

Optuna's JournalStorage appends a record before it notices that the file is damaged (a run killed
mid-write leaves a partial last line; an edit can leave a line that is not a record), and then
fails with the bare JSON error, naming neither the file nor the line. Read first, refuse with both,
and say how to repair it: a journal is one JSON record per line, so the part before the first
damaged line is a valid journal of the trials recorded up to there.
"""
from __future__ import annotations

from pathlib import Path

from msa_cache.errors import UserError

MAX_RECORD_BYTES = 16 << 20  # one record is well under a kilobyte; a longer "line" is not a journal


def _known_ops() -> set[int] | None:
    try:  # Optuna's own list of operations (not re-exported publicly); without it, any integer passes
        from optuna.storages.journal._storage import JournalOperation
    except ImportError:
        return None
    return {int(op) for op in JournalOperation}


def _problem(line: bytes, ops: set[int] | None) -> str | None:
    import json

    if not line.endswith(b"\n"):
        return "the record is cut short (no line end; a process was stopped while writing?)"
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as e:
        return f"not a JSON record ({type(e).__name__})"
    if not isinstance(record, dict):
        return "not a JSON object"
    op = record.get("op_code")
    if not isinstance(op, int) or isinstance(op, bool) or (ops is not None and op not in ops):
        return "unknown operation (op_code)"
    if not isinstance(record.get("worker_id"), str):
        return "no worker_id"
    return None


def check_journal(path: str | Path) -> None:
    """UserError naming the file and the first damaged line of an Optuna journal; nothing for a good
    journal or a missing file (tune creates it)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_file():
        raise UserError("the tune journal is not a file", path, "pass --storage FILE.journal")
    ops = _known_ops()
    with open(path, "rb") as f:
        for number, line in enumerate(iter(lambda: f.readline(MAX_RECORD_BYTES + 1), b""), start=1):
            problem = ("a line longer than any record" if len(line) > MAX_RECORD_BYTES else _problem(line, ops))
            if problem:
                keep = number - 1
                repair = (f"keep its first {keep} complete records (`head -n {keep} {path} > fixed.journal`, then "
                          f"move fixed.journal over it) or remove it to start the study again") if keep else \
                    "remove it to start the study again"
                raise UserError(f"the tune journal is damaged at line {number}: {problem}", path, repair)
