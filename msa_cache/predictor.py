"""A finished run as a scikit-learn-style predictor for notebooks and batch jobs:

    import msa_cache
    model = msa_cache.load("runs/mvsa-single/late-.../seed-0")   # or "USER/REPO" on the Hugging Face Hub
    model.classes                                   # ['positive', 'neutral', 'negative']
    model.predict(["what a day!"], ["post.jpg"])    # ['positive']
    model.predict_proba(texts, images)              # [n, classes] float32
    model.predict_frame(df, text="text", image="image")   # df + pred_class + prob_<class> columns

The run's encoders are built once, when the predictor is made, and every call runs them in batches
(`batch_size`), through the same path as `msa-cache predict`: a cached run replays extraction, a
fine-tuned run runs its whole model. Images are file paths or PIL images; PIL images are written as
PNG files to a temporary folder that is removed when the call returns.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from msa_cache.finished_run import load_predictor
from msa_cache.predict import posts_from_columns, posts_manifest, read_post_columns
from msa_cache.remote import resolve_run

CHUNK = 1024  # posts per progress step; each chunk is run in batches of `batch_size`


class Predictor:
    def __init__(self, run: str | Path, revision: str | None = None, device: str = "auto", batch_size: int = 32,
                 progress: bool | None = None, cache_dir: str | Path | None = None):
        from msa_cache.study.stack import StackPredictor, is_stack_folder

        self.path = resolve_run(run, revision, cache_dir)
        # The mode-specific predictor (msa_cache.finished_run): a cached run replays extraction, a fine-tuned one
        # runs its whole model; a stack folder (compare --stack --refit) runs its members' refits.
        self.backend = (StackPredictor(self.path, device=device, batch_size=batch_size) if is_stack_folder(self.path)
                        else load_predictor(self.path, device=device, batch_size=batch_size))
        self.classes: list[str] = list(self.backend.classes)
        self.progress = progress

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, classes={self.classes}, uses={sorted(self.uses)})"

    @property
    def uses(self) -> set[str]:
        """The inputs a post must have: "text" and/or "image"."""
        return set(self.backend.uses)

    @property
    def text_pair(self) -> bool:
        """Trained on sentence + target pairs (then every post needs its text_pair)."""
        return bool(self.backend.text_pair)

    def predict_proba(self, texts: Sequence[str | None] | None = None, images: Sequence[Any] | None = None,
                      text_pairs: Sequence[str | None] | None = None) -> np.ndarray:
        """[n, len(classes)] class probabilities, one row per post, in order."""
        posts = self._posts(texts, images, text_pairs)
        if not posts:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        with tempfile.TemporaryDirectory(prefix="msa-cache-images-") as tmp:
            posts = [_with_image_file(p, Path(tmp), i) for i, p in enumerate(posts)]
            out = []
            for start in self._chunks(len(posts)):
                chunk = posts[start:start + CHUNK]
                manifest = posts_manifest(chunk, self.classes)
                out.append(self.backend.probs(manifest, np.arange(len(chunk))))
        probs = np.concatenate(out).astype(np.float32)
        if not np.isfinite(probs).all():
            raise ValueError(f"{self.path}: the model gave non-finite probabilities; its weights may be damaged")
        return probs

    def predict(self, texts: Sequence[str | None] | None = None, images: Sequence[Any] | None = None,
                text_pairs: Sequence[str | None] | None = None) -> list[str]:
        """The predicted class name of each post."""
        probs = self.predict_proba(texts, images, text_pairs)
        return [self.classes[int(k)] for k in probs.argmax(1)] if len(probs) else []

    def predict_frame(self, frame, text: str | None = "text", image: str | None = "image",
                      text_pair: str | None = None):
        """A copy of the pandas DataFrame with `pred_class` and one `prob_<class>` column per class added.
        Columns named None are not read (a text-only run needs no image column)."""
        for role, column in (("text", text), ("image", image), ("text_pair", text_pair)):
            if column is not None and column not in frame.columns:
                raise ValueError(f"the frame has no column {column!r} for the {role} "
                                 f"(its columns: {', '.join(map(str, frame.columns))[:200]}); "
                                 f"pass {role}=<column> or {role}=None")
        probs = self.predict_proba(
            _column(frame, text) if "text" in self.uses or text_pair else None,
            _column(frame, image) if "image" in self.uses else None,
            _column(frame, text_pair) if text_pair else None)
        out = frame.copy()
        out["pred_class"] = [self.classes[int(k)] for k in probs.argmax(1)] if len(probs) else []
        for c, name in enumerate(self.classes):
            out[f"prob_{name}"] = probs[:, c]
        return out

    def _posts(self, texts, images, text_pairs) -> list[dict]:
        given = {k: list(v) for k, v in (("text", texts), ("image", images), ("text_pair", text_pairs))
                 if v is not None}
        if not given:
            raise ValueError("no posts: pass texts and/or images (lists of equal length)")
        lengths = {k: len(v) for k, v in given.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"texts, images and text_pairs must have one entry per post; got lengths {lengths}")
        n = next(iter(lengths.values()))
        for modality in ("text", "image"):
            if modality in self.uses and modality not in given:
                raise ValueError(f"this run uses a {modality} encoder; pass {modality}s=[...] "
                                 f"({'an empty string is a valid text' if modality == 'text' else 'a path or PIL image per post'})")
        pairs = given.get("text_pair")
        has_pairs = pairs is not None and any(p is not None for p in pairs)
        if self.text_pair and not has_pairs:
            raise ValueError("this run was trained on sentence + target pairs (e.g. Twitter-15/17); "
                             "pass text_pairs=[target, ...] (the sentence with the target in it as the text)")
        if not self.text_pair and has_pairs:
            raise ValueError("this run was trained on single texts; leave out text_pairs")
        if has_pairs and None in pairs:
            raise ValueError(f"post {pairs.index(None)}: no text_pair; this run was trained on sentence + target "
                             "pairs, so every post needs its target")
        posts = []
        for i in range(n):
            post = {k: v[i] for k, v in given.items()}
            if "image" in self.uses and post.get("image") is None:
                raise ValueError(f"post {i}: no image; this run uses an image encoder")
            if "text" in post and post["text"] is not None and not isinstance(post["text"], str):
                raise ValueError(f"post {i}: the text is a {type(post['text']).__name__}, not a string")
            posts.append(post)
        return posts

    def _chunks(self, n: int):
        starts = range(0, n, CHUNK)
        show = self.progress if self.progress is not None else (n > CHUNK and sys.stderr.isatty())
        if not show:
            return starts
        from tqdm.auto import tqdm

        return tqdm(starts, total=len(starts), unit="chunk", desc=f"predict {n} posts")


def _column(frame, name: str | None):
    if name is None:
        return None
    return [None if _is_missing(v) else v for v in frame[name].tolist()]


def _is_missing(value) -> bool:
    try:
        return value is None or bool(value != value)  # NaN (pandas' missing value) is not equal to itself
    except (TypeError, ValueError):
        return False


def _with_image_file(post: dict, tmp: Path, i: int) -> dict:
    """A PIL image becomes a PNG in `tmp` (the manifest readers take paths); paths pass through."""
    image = post.get("image")
    if image is None or isinstance(image, (str, Path)):
        return post
    if hasattr(image, "save") and hasattr(image, "mode"):
        path = tmp / f"{i}.png"
        image.save(path, format="PNG")
        return {**post, "image": str(path)}
    raise ValueError(f"post {i}: the image is a {type(image).__name__}; pass a file path or a PIL image")


def load(run: str | Path, revision: str | None = None, device: str = "auto", batch_size: int = 32,
         progress: bool | None = None, cache_dir: str | Path | None = None) -> Predictor:
    """A finished run (a local run folder, an exported folder, or a Hub repo id `USER/REPO`) ready to
    predict; `revision` pins a Hub branch, tag or commit."""
    return Predictor(run, revision, device, batch_size, progress, cache_dir)


def predict_file(run: "Predictor", source: str | Path, out: str | Path | None = None, text_col: str = "text",
                 image_col: str | None = "image", text_pair_col: str | None = None,
                 columns: dict | None = None) -> "pa.Table":
    """Predict every post of a CSV, JSON-lines or Parquet file (no label or split column needed): a table of
    `row` (0-based, in file order), the file's `id` column where it has one, `pred_class` and `prob_<class>`;
    written to `out` (.csv with a header row, or .parquet) when given. Relative image paths are read from
    the input file's folder. `columns`: the file already read (read_post_columns)."""
    import pyarrow as pa

    columns = read_post_columns(source) if columns is None else columns  # given: read before the model loaded
    posts, ids = posts_from_columns(columns, source, text_col if "text" in run.uses or text_pair_col else None,
                                    image_col if "image" in run.uses else None, text_pair_col)
    def given(role: str) -> list | None:
        """The file's values for `role`; None where it gives none (texts always go: "" is a valid text)."""
        values = [p.get(role) for p in posts]
        return None if role != "text" and all(v is None for v in values) else values

    probs = (run.predict_proba(given("text"), given("image"), given("text_pair")) if posts
             else np.zeros((0, len(run.classes)), np.float32))
    cols = {"row": pa.array(np.arange(len(posts), dtype=np.int64))}
    if ids is not None:
        cols["id"] = pa.array(ids, pa.string())
    cols["pred_class"] = pa.array([run.classes[int(k)] for k in probs.argmax(1)] if len(probs) else [], pa.string())
    for c, name in enumerate(run.classes):
        cols[f"prob_{name}"] = pa.array(probs[:, c].astype(np.float32))
    table = pa.table(cols)
    if out is not None:
        write_predictions(table, out)
    return table


def write_predictions(table, out: str | Path) -> Path:
    """CSV (header row) or Parquet by the suffix, written atomically."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from msa_cache.atomic import write_atomic

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"-o {out}: write .csv or .parquet")
    writer = (lambda tmp: pcsv.write_csv(table, tmp)) if suffix == ".csv" else (lambda tmp: pq.write_table(table, tmp))
    return write_atomic(out, writer)
