"""`msa-cache predict RUN`: class and probabilities for a new post or a manifest, with the run's
own encoders and preprocessing (cached and fine-tuned runs alike); a thin layer over msa_cache.predict."""
from __future__ import annotations

import json

import click

from msa_cache.encoders.hub import EncoderUnavailable

from msa_cache_cli.options import device_option, threads_option

SHOWN_ROWS = 20


@click.command("predict")
@click.argument("run")
@click.option("--revision", default=None, help="with a Hub repo id: the branch, tag or commit to use [default: main]")
@click.option("--text", default=None, help="the post's text")
@click.option("--image", default=None, type=click.Path(dir_okay=False), help="the post's image file")
@click.option("--text-pair", default=None,
              help="the second text segment, for runs trained on sentence + target pairs (Twitter-15/17: the target)")
@click.option("--manifest", default=None, type=click.Path(exists=True, dir_okay=False),
              help="predict every row of this manifest instead")
@click.option("--input", "input_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="predict every post of this .csv (header row), .jsonl or .parquet file; no label or split "
                   "column needed; relative image paths are read from the file's folder")
@click.option("--text-col", default="text", show_default=True, help="with --input: the text column")
@click.option("--image-col", default="image", show_default=True, help="with --input: the image path column")
@click.option("--text-pair-col", default=None, help="with --input: the text pair column (runs trained on pairs)")
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="with --manifest: write id, split, label, pred, pred_class, prob_<class> to this Parquet file; "
                   "with --input: write row, id (where the file has one), pred_class, prob_<class> to a .csv or "
                   ".parquet file")
@click.option("--split", default=None, type=click.Choice(["train", "dev", "test"]),
              help="with --manifest: one split only")
@click.option("--json", "as_json", is_flag=True,
              help="print the result as JSON (with --input: one JSON object per post, JSON lines)")
@device_option()
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@threads_option
def predict_cmd(run, revision, text, image, text_pair, manifest, input_file, text_col, image_col, text_pair_col, out,
                split, as_json, device, batch_size):
    """Predict with a finished run (cached or fine-tuned), a folder or a Hub repo id.

    \b
    msa-cache predict runs/mvsa-single/ae-cat-.../seed-0 --image post.jpg --text "what a day"
    msa-cache predict runs/mvsa-single/ae-cat-.../seed-0 --input posts.csv -o preds.csv
    msa-cache predict USER/REPO --revision v1 --image post.jpg --text "what a day"   # an exported run on the Hub
    msa-cache predict runs/mvsa-single/ae-cat-.../seed-0 --manifest manifests/new.parquet -o preds.parquet
    msa-cache predict runs/twitter2015/late-.../seed-0 --image t.jpg --text "Chuck Bass is everything" --text-pair "Chuck Bass"
    """
    from msa_cache import threads
    from msa_cache.predict import POST_FORMATS, predict_manifest, predict_post, read_post_columns
    from msa_cache.predictor import Predictor, predict_file

    threads.use("large")  # posts go through the run's encoders
    single = text is not None or image is not None or text_pair is not None
    if not single and manifest is None and input_file is None:
        raise click.UsageError("give --text/--image for one post, --input FILE for many, or --manifest M")
    if manifest is not None and single:
        raise click.UsageError("--manifest predicts a whole manifest; leave out --text/--image/--text-pair")
    if input_file is not None and (single or manifest is not None):
        raise click.UsageError("--input predicts every post of a file; leave out --text/--image/--text-pair/--manifest")
    if single and (out or split):
        raise click.UsageError("-o/--split go with --manifest or --input")
    if input_file is not None and split:
        raise click.UsageError("--split goes with --manifest")
    if input_file is not None and out and not str(out).lower().endswith((".csv", ".parquet")):
        raise click.UsageError(f"-o {out}: with --input, write a .csv or .parquet file")
    if input_file is not None and not str(input_file).lower().endswith(POST_FORMATS):
        raise click.UsageError(f"--input {input_file}: read a .csv, .jsonl or .parquet file")
    columns = read_post_columns(input_file) if input_file is not None else None  # a bad file: before any model
    try:
        model = Predictor(run, revision=revision, device=device, batch_size=batch_size)
        predictor = model.backend
        if input_file is not None:
            table = predict_file(model, input_file, out, text_col, image_col, text_pair_col, columns=columns)
            _echo_posts(table, out, as_json)
            return
        if manifest is None:
            result = predict_post(model.path, text, image, predictor=predictor, text_pair=text_pair)
            if as_json:
                click.echo(json.dumps(result))
            else:
                probs = ", ".join(f"{c} {p:.3f}" for c, p in result["probs"].items())
                click.echo(f"{result['class']}  ({probs})")
            return
        table = predict_manifest(model.path, manifest, out, split, predictor=predictor)
    except EncoderUnavailable as e:
        raise click.ClickException(str(e)) from None
    _summarise(table.to_pydict(), out)


def _echo_first_rows(t: dict, keys: list[str], noun: str) -> None:
    """The first SHOWN_ROWS predictions as tab-separated lines: the `keys` columns, the class, the probabilities."""
    n = len(t["pred_class"])
    prob_cols = [k for k in t if k.startswith("prob_")]
    for i in range(min(n, SHOWN_ROWS)):
        probs = " ".join(f"{k[5:]} {t[k][i]:.3f}" for k in prob_cols)
        click.echo("\t".join([*(f"{t[k][i]}" for k in keys), t["pred_class"][i], probs]))
    if n > SHOWN_ROWS:
        click.echo(f"... {n - SHOWN_ROWS} more {noun}; -o FILE writes them all")


def _echo_posts(table, out: str | None, as_json: bool) -> None:
    t = table.to_pydict()
    prob_cols = [k for k in t if k.startswith("prob_")]
    n = len(t["row"])
    if as_json:
        for i in range(n):
            record = {"row": t["row"][i], **({"id": t["id"][i]} if "id" in t else {}), "class": t["pred_class"][i],
                      "probs": {k[5:]: round(float(t[k][i]), 6) for k in prob_cols}}
            click.echo(json.dumps(record))
    elif out is None:
        _echo_first_rows(t, ["id" if "id" in t else "row"], "posts")
    if out is not None:
        click.echo(f"wrote {n} predictions to {out}", err=as_json)


def _summarise(t: dict, out: str | None) -> None:
    import numpy as np

    n = len(t["id"])
    if out is None:
        _echo_first_rows(t, ["id", "split"], "rows")
    else:
        click.echo(f"wrote {n} rows to {out}")
    for split in sorted(set(t["split"])):
        idx = [i for i in range(n) if t["split"][i] == split and t["label"][i] is not None]
        if idx:
            acc = float(np.mean([t["pred"][i] == t["label"][i] for i in idx]))
            click.echo(f"  {split:<5} accuracy {acc:.4f} (n={len(idx)})")
