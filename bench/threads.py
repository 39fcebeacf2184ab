"""The thread policy under a competing CPU load: `fit` with the default policy vs forced 2 threads.

    python bench/threads.py [--world /work/behave/world] [--heads ae-add,mha] [--max-epochs 3] [--repeats 2]

Starts one busy process per core this process may use (stopped at the end), then trains each head
on the demo world with (a) the default policy (`msa-cache fit`, OMP_NUM_THREADS/MKL_NUM_THREADS unset,
so msa_cache/threads.py decides: 1 thread for these heads) and (b) `--threads 2` (what torch
picks by itself on a 2-core machine), each in a fresh process writing a fresh runs folder, round-robin.
Prints median wall and CPU seconds; target: default <= 1.1x the best of the two.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_load, print_machine, print_table, timed_run

TARGET = 1.1
CLI = [sys.executable, "-m", "msa_cache_cli.main"]
SPIN = "while True:\n    pass\n"


def start_load(n: int) -> list[subprocess.Popen]:
    """n busy processes (pure-Python spin loops), one per core."""
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def fit_once(world: Path, head: str, threads: int | None, max_epochs: int, runs: Path) -> tuple[float, float]:
    manifest = max((world / "manifests").glob("*.parquet"), key=lambda p: p.stat().st_size)  # the main one
    argv = [*CLI, "fit", "--manifest", str(manifest), "--cache-root", str(world / "cache"), "--runs", str(runs),
            "--head", head, "--max-epochs", str(max_epochs)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return timed_run(argv, env, expect="trained in")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=Path("/work/behave/world"),
                    help="folder with manifests/*.parquet and its token caches in cache/ [default: %(default)s]")
    ap.add_argument("--heads", default="ae-add,mha")
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--load", type=int, default=None, help="busy processes [default: one per available core]")
    args = ap.parse_args()
    print_machine("threads: default policy vs forced 2 threads, under a competing load")
    busy = args.load if args.load is not None else len(os.sched_getaffinity(0))
    arms = {"default policy": None, "--threads 2": 2}
    heads = [h for h in args.heads.split(",") if h]
    walls = {(h, a): [] for h in heads for a in arms}
    cpus = {(h, a): [] for h in heads for a in arms}
    load = start_load(busy)
    print(f"competing load: {busy} busy process(es) started")
    try:
        with tempfile.TemporaryDirectory(prefix="msa-bench-threads-") as tmp:
            k = 0
            for _ in range(args.repeats):
                for head in heads:
                    for arm, n in arms.items():
                        k += 1
                        wall, cpu = fit_once(args.world, head, n, args.max_epochs, Path(tmp) / f"runs-{k}")
                        walls[head, arm].append(wall)
                        cpus[head, arm].append(cpu)
    finally:
        stop_load(load)
    rows = []
    for head in heads:
        med = {a: statistics.median(walls[head, a]) for a in arms}
        best = min(med.values())
        for arm in arms:
            ratio = med[arm] / best
            verdict = ("met" if ratio <= TARGET else "missed") if arm == "default policy" else ""
            rows.append([head, arm, med[arm], statistics.median(cpus[head, arm]), ratio, verdict])
    print(f"\nfit --max-epochs {args.max_epochs}, median of {args.repeats} runs each, round-robin, "
          f"{busy} busy process(es) competing")
    print_table(["head", "threads", "wall s", "CPU s", "wall / best", f"default <= {TARGET}x"], rows)
    print_load()


if __name__ == "__main__":
    main()
