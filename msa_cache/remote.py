"""Where a finished run comes from: a local folder, or a Hugging Face Hub model repo that `msa-cache export
--push` wrote (`USER/REPO`, a revision pinnable with `revision=` or `USER/REPO@REVISION`).

The Hub side is huggingface_hub's `snapshot_download`: it keeps its own cache, so a repo downloaded once
predicts offline (HF_HUB_OFFLINE=1) afterwards, and a revision (branch, tag or commit) pins what is used.
Only the files `predict` reads are downloaded.
"""
from __future__ import annotations

import re
from pathlib import Path

from msa_cache.errors import UserError

# What predict reads from an exported run (study/share.py writes them); the rest of the repo stays remote.
RUN_FILES = ["config.json", "metrics.json", "model.safetensors", "model.pt", "README.md", "command.yaml"]
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def is_repo_id(source: str) -> bool:
    """`USER/REPO` (optionally `@REVISION`) that is not an existing local path."""
    name = str(source).split("@", 1)[0]
    return bool(_REPO_ID.fullmatch(name)) and not Path(source).exists()


def resolve_run(source: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local folder of a run: `source` itself when it exists, else the downloaded Hub snapshot."""
    text = str(source)
    if Path(text).exists() or not is_repo_id(text):
        if revision is not None:
            raise UserError("a revision goes with a Hub repo id, not a local folder", text,
                            "leave out the revision, or name the repo as USER/REPO")
        return Path(text)
    repo_id, _, pinned = text.partition("@")
    if pinned and revision and pinned != revision:
        raise UserError(f"two revisions given ({pinned!r} in the id, {revision!r} as an option)", text,
                        "give one")
    return _download(repo_id, revision or pinned or None, cache_dir)


def _download(repo_id: str, revision: str | None, cache_dir) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    where = repo_id + (f"@{revision}" if revision else "")
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=RUN_FILES)
    except RevisionNotFoundError:
        raise UserError("no such revision on the Hub", where, "check the branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise UserError("no such model repo on the Hub (or it is private)", where,
                        "check the id, or log in with `huggingface-cli login` for a private repo") from None
    except LocalEntryNotFoundError:
        raise UserError("cannot download the run: no connection to the Hub and no copy in the local Hub cache",
                        where, "connect once (later calls work offline), or pass a local run folder") from None
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"cannot download the run ({type(e).__name__})", where,
                        "check the connection and the repo id, or pass a local run folder") from None
    return Path(path)
