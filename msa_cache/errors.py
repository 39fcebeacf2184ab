"""The project's own error type: something the user can fix, said in one line.

    raise UserError("config.json is not a JSON object", where=run / "config.json",
                    hint="delete the run folder and train it again")
    # str(e) -> "config.json is not a JSON object (runs/.../config.json): delete the run folder ..."

The API raises it (or a subclass: ManifestError, CacheError, ...); the CLI prints
`error: <str(e)>` and exits with code 2. Anything else is a bug and keeps its
traceback (shown with --debug / MSA_CACHE_DEBUG=1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_SHOWN = 200  # characters of a user's value a message repeats


def shown(value: Any) -> str:
    """A user value for a message: its repr, cut to MAX_SHOWN characters (a value can be huge: a
    config's expanded aliases, a tampered file's field)."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...(cut)"


class UserError(Exception):
    """Bad input, a bad option or a bad folder: `what (where): hint`.

    Older call sites pass one pre-formatted message; `where` and `hint` are then empty."""

    def __init__(self, what: str, where: str | Path | None = None, hint: str | None = None):
        self.what, self.where, self.hint = str(what), None if where is None else str(where), hint
        super().__init__(self.message())

    def message(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.hint:
            text += f": {self.hint}"
        return text

    def __str__(self) -> str:
        return self.message()
