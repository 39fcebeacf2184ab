"""Predict new posts with a finished run: its recorded encoders and preprocessing, then its head.

    from msa_cache.predict import load_predictor, predict_post, predict_manifest
    predict_post("runs/mvsa-single/ae-cat-.../seed-0", "what a day!", "post.jpg")
    # {'class': 'positive', 'probs': {'positive': 0.81, 'neutral': 0.12, 'negative': 0.07}}
    predict_manifest(run, "manifests/new-posts.parquet", "preds.parquet")

A cached run is replayed as extraction made its features: each encoder is
rebuilt from the record in config.json (or, for older runs, the cache's
index.json), with the recorded max_length and text cleaning, verified against
the recorded weights hash, and run through extraction's own batch runner (bad
images -> zero features, values rounded to the cache dtype). A fine-tuned run
rebuilds its whole model. Both come as one predictor (`msa_cache.finished_run.load_predictor`);
either way an encoder that cannot be loaded, or loads other weights, is refused with
one line saying which.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from msa_cache.finished_run import load_predictor
from msa_cache.manifest import Manifest, ManifestMeta, read_manifest, rows_to_table
from msa_cache.manifest.images import load_rgb
from msa_cache.train.identity import run_mode


def posts_manifest(posts: list[dict], classes: list[str]) -> Manifest:
    """New posts ({"text", "image"}) as an in-memory manifest, so they go through the same readers."""
    rows = [{"id": str(i), "text": p.get("text") or "", "text_pair": p.get("text_pair"), "split": "test",
             "image": str(Path(p["image"]).resolve()) if p.get("image") else "",
             "image_ok": bool(p.get("image")), "problem": "" if p.get("image") else "no image"}
            for i, p in enumerate(posts)]
    meta = ManifestMeta(dataset="posts", classes=list(classes), root="", builder="predict")
    return Manifest(rows_to_table(rows), meta, path=None)


def _check_post(predictor, text: str | None, image: str | None) -> None:
    uses = predictor.uses
    if "image" in uses:
        if image is None:
            raise ValueError("this run uses an image encoder; pass --image FILE")
        try:
            load_rgb(image)
        except Exception as e:
            raise ValueError(f"--image {image}: cannot read it as an image ({type(e).__name__}: {e})") from None
    if "text" in uses and text is None:
        raise ValueError("this run uses a text encoder; pass --text \"...\" (an empty string is allowed)")


def _check_pair(predictor, text_pair: str | None) -> None:
    if predictor.text_pair and text_pair is None:
        raise ValueError("this run was trained on sentence + target pairs (e.g. Twitter-15/17); "
                         "pass --text-pair TARGET (and the sentence with the target in it as --text)")
    if not predictor.text_pair and text_pair is not None:
        raise ValueError("this run was trained on single texts; leave out --text-pair")


def _pairs_as_trained(man: Manifest, predictor, where: str) -> Manifest:
    """The manifest with text pairs exactly where the run was trained with them."""
    if predictor.text_pair and not man.has_text_pair:
        raise ValueError(f"{where}: this run was trained on sentence + target pairs, and the manifest has "
                         "no text_pair column; build it with `msa-cache manifest tmsc` (or table --text-pair-col)")
    if not predictor.text_pair and man.has_text_pair:  # the run never saw a second segment
        column = man.table.schema.get_field_index("text_pair")
        table = man.table.set_column(column, "text_pair", pa.nulls(len(man), pa.string()))
        return Manifest(table, man.meta, man.path)
    return man


def _finite(probs: np.ndarray, run) -> np.ndarray:
    """The probabilities, or a one-line error naming the run when its model gives NaN or infinities
    (damaged weights) instead of printing them as an answer."""
    if not np.isfinite(probs).all():
        raise ValueError(f"{run}: the model's outputs are not finite numbers (NaN or infinite); its weights are "
                         "damaged: train the run again")
    return probs


def predict_post(run, text: str | None = None, image: str | None = None, predictor=None,
                 text_pair: str | None = None) -> dict:
    """{"class": name, "probs": {class: p}} for one post (text_pair: its target, for runs trained on pairs)."""
    predictor = predictor or load_predictor(run)
    _check_post(predictor, text, image)
    _check_pair(predictor, text_pair)
    post = {"text": text, "image": image, "text_pair": text_pair}
    probs = _finite(predictor.probs(posts_manifest([post], predictor.classes), np.arange(1)), run)[0]
    return {"class": predictor.classes[int(probs.argmax())],
            "probs": {c: round(float(p), 6) for c, p in zip(predictor.classes, probs)}}


def predict_manifest(run, manifest: str | Path, out: str | Path | None = None, split: str | None = None,
                     predictor=None) -> pa.Table:
    """id, split, label, pred, pred_class, prob_<class> for the manifest's rows (one split, or all),
    the columns of a run's predictions.parquet plus the class name; written to `out` when given."""
    predictor = predictor or load_predictor(run)
    man = _pairs_as_trained(read_manifest(manifest), predictor, str(manifest))
    labels = man.labels("label")
    if man.classes != predictor.classes and (labels >= 0).any():
        raise ValueError(f"{manifest}: its classes {man.classes} are not the run's {predictor.classes}; "
                         "labels would be compared with the wrong classes")
    splits = np.array(man.column("split"))
    rows = np.arange(len(man)) if split is None else np.flatnonzero(splits == split)
    probs = _finite(predictor.probs(man, rows), run)
    preds = probs.argmax(1) if len(rows) else np.zeros(0, dtype=np.int64)
    ids = man.ids
    cols = {
        "id": pa.array([ids[r] for r in rows], pa.string()),
        "split": pa.array(splits[rows].tolist(), pa.string()),
        "label": pa.array([None if labels[r] < 0 else int(labels[r]) for r in rows], pa.int64()),
        "pred": pa.array(preds.astype(np.int64)),
        "pred_class": pa.array([predictor.classes[p] for p in preds], pa.string()),
    }
    for c, name in enumerate(predictor.classes):
        cols[f"prob_{name}"] = pa.array(probs[:, c].astype(np.float32))
    table = pa.table(cols)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
    return table


POST_FORMATS = (".csv", ".jsonl", ".parquet")


def read_post_columns(source: str | Path) -> dict[str, list]:
    """The columns of a CSV (RFC 4180, header row), JSON-lines or Parquet file of posts; an unreadable file
    is a one-line error naming it (and the line, for JSON lines)."""
    source = Path(source)
    suffix = source.suffix.lower()
    if suffix not in POST_FORMATS:
        raise ValueError(f"--input {source}: read .csv, .jsonl or .parquet files")
    return _read_columns(source, suffix)


def posts_from_columns(columns: dict[str, list], source: str | Path, text_col: str | None, image_col: str | None,
                       text_pair_col: str | None) -> tuple[list[dict], list[str] | None]:
    """Posts ({"text", "image", "text_pair"}) and the `id` column as strings (None where there is none).
    Columns named None are not read; relative image paths are taken from the source file's folder; a
    missing value is None."""
    source = Path(source)
    wanted = {"text": text_col, "image": image_col, "text_pair": text_pair_col}
    for role, name in wanted.items():
        if name is not None and name not in columns:
            have = ", ".join(columns)[:200]
            raise ValueError(f"{source}: no column {name!r} for the {role} (columns: {have}); "
                             f"name it with --{role.replace('_', '-')}-col")
    n = len(next(iter(columns.values()))) if columns else 0
    posts = []
    for i in range(n):
        post = {}
        for role, name in wanted.items():
            if name is None:
                continue
            value = columns[name][i]
            if value is not None and not isinstance(value, str):
                value = str(value)
            if role == "image" and value:
                value = str(source.parent / value) if not Path(value).is_absolute() else value
            post[role] = value if value != "" or role == "text" else None
        posts.append(post)
    ids = None if "id" not in columns else [None if v is None else str(v) for v in columns["id"]]
    return posts, ids


def _read_columns(source: Path, suffix: str) -> dict[str, list]:
    if suffix == ".parquet":
        try:
            return pq.read_table(source).to_pydict()
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{source}: not a readable Parquet file ({str(e)[:200]})") from None
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        try:  # every column as text: ids like 007 and numbers in tweets stay as written
            table = pcsv.read_csv(source, parse_options=pcsv.ParseOptions(newlines_in_values=True),
                                  convert_options=pcsv.ConvertOptions(strings_can_be_null=True,
                                                                      column_types=_all_strings(source)))
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{source}: not a readable CSV file ({str(e)[:200]}); it needs a header row and "
                             "RFC 4180 quoting") from None
        return table.to_pydict()
    rows = []
    with open(source, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source} line {number}: not JSON ({e.msg}); one JSON object per line") from None
            if not isinstance(row, dict):
                raise ValueError(f"{source} line {number}: a JSON {type(row).__name__}, not an object; "
                                 "one JSON object per line")
            rows.append(row)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


def _all_strings(source: Path) -> dict:
    """{column: string} for the header of a CSV file, so pyarrow infers no numbers or dates."""
    import csv

    with open(source, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return {name: pa.string() for name in header}


def run_summary(run: str | Path) -> str:
    config = json.loads((Path(run) / "config.json").read_text())
    spec = config.get("spec", {})
    mode = run_mode(config)
    encoders = ", ".join(sorted({r.get("encoder", "?") for r in (config.get("encoders") or {}).values()}))
    return f"{spec.get('head')} ({mode}{'; ' + encoders if encoders else ''})"
