"""`msa-cache predict RUN`: class and probabilities for a new post or a manifest, with the run's
own encoders and preprocessing (cached and fine-tuned runs alike); a thin layer over msa_cache.predict."""
from __future__ import annotations

import json

import click
from msa_cache.encoders.hub import EncoderUnavailable

from msa_cache_cli.options import device_option, threads_option

SHOWN_ROWS = 20


@click.command("predict")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--text", default=None, help="the post's text")
@click.option("--image", default=None, type=click.Path(dir_okay=False), help="the post's image file")
@click.option("--text-pair", default=None,
              help="the second text segment, for runs trained on sentence + target pairs (Twitter-15/17: the target)")
@click.option("--manifest", default=None, type=click.Path(exists=True, dir_okay=False),
              help="predict every row of this manifest instead")
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="with --manifest: write id, split, label, pred, pred_class, prob_<class> to this Parquet file")
@click.option("--split", default=None, type=click.Choice(["train", "dev", "test"]),
              help="with --manifest: one split only")
@click.option("--json", "as_json", is_flag=True, help="print the single-post result as JSON")
@device_option()
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@threads_option
def predict_cmd(run, text, image, text_pair, manifest, out, split, as_json, device, batch_size):
    """Predict with a finished run (cached or fine-tuned).

    \b
    msa-cache predict runs/mvsa-single/ae-cat-.../seed-0 --image post.jpg --text "what a day"
    msa-cache predict runs/mvsa-single/ae-cat-.../seed-0 --manifest manifests/new.parquet -o preds.parquet
    msa-cache predict runs/twitter2015/late-.../seed-0 --image t.jpg --text "Chuck Bass is everything" --text-pair "Chuck Bass"
    """
    from msa_cache import threads
    from msa_cache.predict import load_predictor, predict_manifest, predict_post

    threads.use("large")  # a post or a manifest goes through the run's encoders
    if manifest is None and text is None and image is None:
        raise click.UsageError("give --text/--image for one post, or --manifest M")
    if manifest is not None and (text is not None or image is not None or text_pair is not None):
        raise click.UsageError("--manifest predicts a whole manifest; leave out --text/--image/--text-pair")
    if manifest is None and (out or split):
        raise click.UsageError("-o/--split go with --manifest")
    try:
        predictor = load_predictor(run, device=device, batch_size=batch_size)
        if manifest is None:
            result = predict_post(run, text, image, predictor=predictor, text_pair=text_pair)
            if as_json:
                click.echo(json.dumps(result))
            else:
                probs = ", ".join(f"{c} {p:.3f}" for c, p in result["probs"].items())
                click.echo(f"{result['class']}  ({probs})")
            return
        table = predict_manifest(run, manifest, out, split, predictor=predictor)
    except EncoderUnavailable as e:
        raise click.ClickException(str(e)) from None
    _summarise(table.to_pydict(), out)


def _summarise(t: dict, out: str | None) -> None:
    import numpy as np

    n = len(t["id"])
    prob_cols = [k for k in t if k.startswith("prob_")]
    if out is None:
        for i in range(min(n, SHOWN_ROWS)):
            probs = " ".join(f"{k[5:]} {t[k][i]:.3f}" for k in prob_cols)
            click.echo(f"{t['id'][i]}\t{t['split'][i]}\t{t['pred_class'][i]}\t{probs}")
        if n > SHOWN_ROWS:
            click.echo(f"... {n - SHOWN_ROWS} more rows; -o FILE writes them all")
    else:
        click.echo(f"wrote {n} rows to {out}")
    for split in sorted(set(t["split"])):
        idx = [i for i in range(n) if t["split"][i] == split and t["label"][i] is not None]
        if idx:
            acc = float(np.mean([t["pred"][i] == t["label"][i] for i in idx]))
            click.echo(f"  {split:<5} accuracy {acc:.4f} (n={len(idx)})")
