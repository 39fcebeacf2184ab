"""Predicting many posts: one batch call vs one call per post, side by side in one run.

    python bench/predict.py RUN --manifest M [--posts 1000] [--cli-calls 10] [--threads 1]

RUN is a finished run of manifest M (its encoders are rebuilt offline from the recorded provenance).
The posts are M's rows with an image, repeated up to --posts. Measured:

  (a) batch:       one `msa-cache predict RUN --input posts.csv -o preds.csv` process (encoders built once)
  (b) API loop:    --posts calls of `predict_post` in one Python process with the predictor loaded once
  (c) CLI calls:   --cli-calls single-post `msa-cache predict RUN --text .. --image ..` processes, each
                   paying start-up and the encoders' load; their mean time x --posts is the cost of
                   predicting every post that way (extrapolated: 1,000 processes take over an hour here)

Every post's probabilities from (a) and (b) are compared (max abs difference).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_load, print_machine, print_table, set_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--posts", type=int, default=1000)
    ap.add_argument("--cli-calls", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    print_machine("predict: one batch vs one call per post")

    import numpy as np

    from msa_cache.manifest import read_manifest
    from msa_cache.predict import predict_post
    from msa_cache.predictor import load

    man = read_manifest(args.manifest)
    ok = [r for r in range(len(man)) if man.column("image_ok")[r]]
    rows = [ok[k % len(ok)] for k in range(args.posts)]
    texts = [man.column("text")[r] for r in rows]
    images = [str(man.image_path(man.column("image")[r])) for r in rows]
    env_threads = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cli = [sys.executable, "-m", "msa_cache_cli.main", "predict", args.run]
    import os

    env = {**os.environ, **env_threads}
    with tempfile.TemporaryDirectory() as tmp:
        posts = Path(tmp) / "posts.csv"
        with open(posts, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "image"])
            w.writerows([[k, t, i] for k, (t, i) in enumerate(zip(texts, images))])
        t0 = time.perf_counter()
        subprocess.run([*cli, "--input", str(posts), "-o", str(Path(tmp) / "preds.csv")], check=True, env=env,
                       capture_output=True)
        batch = time.perf_counter() - t0
        with open(Path(tmp) / "preds.csv") as f:
            got = np.array([[float(v) for v in row[3:]] for row in list(csv.reader(f))[1:]])

    t0 = time.perf_counter()
    model = load(args.run)
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = np.array([list(predict_post(args.run, t, i, predictor=model.backend)["probs"].values())
                     for t, i in zip(texts, images)])
    loop_seconds = time.perf_counter() - t0 + load_seconds

    singles = []
    for k in range(args.cli_calls):
        t0 = time.perf_counter()
        subprocess.run([*cli, "--text", texts[k], "--image", images[k]], check=True, env=env, capture_output=True)
        singles.append(time.perf_counter() - t0)
    per_call = float(np.mean(singles))
    n = args.posts
    print_table(["way", "posts", "seconds", "s/post", "x batch"], [
        ["(a) batch: predict --input (one process)", n, f"{batch:.1f}", f"{batch / n:.4f}", "1.00"],
        ["(b) API loop: predict_post per post (loaded once)", n, f"{loop_seconds:.1f}", f"{loop_seconds / n:.4f}",
         f"{loop_seconds / batch:.2f}"],
        [f"(c) CLI per post: mean of {args.cli_calls} processes x {n}", n, f"{per_call * n:.0f} (extrapolated)",
         f"{per_call:.2f}", f"{per_call * n / batch:.0f}"],
    ])
    print(f"max |p(a) - p(b)| over {n} posts x {got.shape[1]} classes: {np.abs(got - loop).max():.2e}")
    print_load()


if __name__ == "__main__":
    main()
