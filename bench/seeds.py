"""Seeds trained together vs one at a time: `compare --heads late,ae-cat --seeds 5`.

    python bench/seeds.py [--heads late,ae-cat] [--seeds 5] [--max-epochs 30] [--threads 1] [--repeats 1]

On an MVSA-Single-sized world of pooled features (bench/pooled_world.py: 3,611 train rows,
384-d text + 1,280-d image), the same grid through `msa_cache.study.compare.compare`, once
with the seeds of each head stacked (fit/seeds.py, the default) and once with
`batch_seeds=False` (`--no-batch-seeds`: one run after the other), each into a fresh runs
folder, in this one process (imports and the world are warm before either is timed; with
--repeats R the two alternate R times and the best time of each counts). Default training
settings (30 epochs at most, patience 5). Prints both times, the ratio (target <= 0.4) and
the largest difference between the two grids' numbers: every metric of every run and every
predicted probability (they should be equal up to float rounding).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import pooled_world  # noqa: E402


def _numbers(tree, path=""):
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{path}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{path}[{i}]").items()}
    return {path: tree} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def differences(a_runs: list[Path], b_runs: list[Path]) -> tuple[float, float, int, int]:
    """(largest metric difference, largest probability difference, predictions that differ, epochs that
    differ) between two lists of the same runs."""
    import numpy as np
    import pyarrow.parquet as pq

    metric = prob = 0.0
    preds = epochs = 0
    for a, b in zip(a_runs, b_runs):
        ma, mb = (_numbers(json.loads((p / "metrics.json").read_text())) for p in (a, b))
        metric = max([metric] + [abs(ma[k] - mb[k]) for k in ma])
        ta, tb = (pq.read_table(p / "predictions.parquet").to_pydict() for p in (a, b))
        preds += sum(x != y for x, y in zip(ta["pred"], tb["pred"]))
        for col in (c for c in ta if c.startswith("prob_")):
            prob = max(prob, float(np.abs(np.array(ta[col]) - np.array(tb[col])).max()))
        ha, hb = ((p / "history.jsonl").read_text().splitlines() for p in (a, b))
        epochs += len(ha) != len(hb)
    return metric, prob, preds, epochs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", default="late,ae-cat")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="time each way R times, alternating; the best counts")
    ap.add_argument("--dir", type=Path, default=common.SCRATCH / "seeds")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    common.print_machine("bench/seeds.py: seeds of a configuration trained together vs one at a time")

    from msa_cache.fit.config import TrainConfig
    from msa_cache.fit.features import resolve_caches
    from msa_cache.manifest import read_manifest
    from msa_cache.study.compare import compare

    t0 = time.perf_counter()
    manifest, cache_root = pooled_world.ensure_world()
    print(f"world: {manifest} ({time.perf_counter() - t0:.1f} s to write or find)", flush=True)
    caches = resolve_caches(read_manifest(manifest), cache_root, None, None)
    heads = [h for h in args.heads.split(",") if h]
    train = TrainConfig(max_epochs=args.max_epochs)
    seeds = list(range(args.seeds))
    quiet = lambda line: None  # noqa: E731

    def grid(batch: bool, runs: Path) -> tuple[float, list[Path]]:
        shutil.rmtree(runs, ignore_errors=True)
        t = time.perf_counter()
        entries = compare(manifest, caches, heads, {}, seeds, train, runs, log=quiet, batch_seeds=batch)
        seconds = time.perf_counter() - t
        runs_of = sorted((r.path for e in entries for r in e.results), key=lambda p: (p.parent.name, p.name))
        return seconds, runs_of

    # warm-up (first-call allocations, the pooled load's page cache): one short grid, not timed
    compare(manifest, caches, heads[:1], {}, seeds[:2], TrainConfig(max_epochs=1), args.dir / "warm", log=quiet)
    times = {"alone": [], "together": []}
    runs = {}
    for _ in range(args.repeats):
        for name, batch in (("alone", False), ("together", True)):
            seconds, runs[name] = grid(batch, args.dir / name)
            times[name].append(seconds)
            print(f"  {name:<9} {seconds:.1f} s (load {common.load_average()})", flush=True)
    alone, together = min(times["alone"]), min(times["together"])
    metric, prob, preds, epochs = differences(runs["alone"], runs["together"])
    n = len(runs["alone"])
    print()
    common.print_table(
        ["grid", "runs", "one at a time s", "together s", "together / alone", "target <= 0.4",
         "max metric diff", "max prob diff", "preds differing", "runs with other epoch count"],
        [[f"{args.heads} x {args.seeds} seeds", n, alone, together, together / alone,
          "met" if together / alone <= 0.4 else "MISSED", metric, prob, preds, epochs]])
    same = [a.relative_to(args.dir / "alone") == b.relative_to(args.dir / "together")
            for a, b in zip(runs["alone"], runs["together"])]
    print(f"run folders (identities) the same: {all(same)} ({sum(same)}/{n})")
    common.print_load()
    return 0


if __name__ == "__main__":
    sys.exit(main())
