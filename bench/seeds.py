"""Seeds trained together vs one at a time: `compare --heads late,ae-cat --seeds 5`.

    python bench/seeds.py [--heads late,ae-cat] [--seeds 5] [--max-epochs 30] [--threads 1]
                          [--worlds 384x1280,32x32] [--repeats 1]
    python bench/seeds.py --sweep     # where stacking pays on this CPU (fit/seeds.py CPU_STACK_MAX_PARAMS)

On MVSA-Single-sized worlds of pooled features (bench/pooled_world.py: 3,611 train rows;
text x image feature widths from --worlds: 384x1280 is MiniLM + EfficientNet-Lite0, 32x32 a
small world where per-op overhead dominates), the same grid through
`msa_cache.study.compare.compare`, three ways, each into a fresh runs folder, in this one
process (imports and the world warm before anything is timed; with --repeats R the ways
alternate R times and the best time of each counts):
  alone     batch_seeds=False (`--no-batch-seeds`): one run after the other;
  stacked   batch_seeds=True (`--batch-seeds`): every head's seeds stacked (fit/seeds.py);
  auto      the default: stacked where it pays (on a CPU: heads of at most 100k parameters).
Default training settings (30 epochs at most, patience 5). Prints the times, the ratios to
"alone" (target for stacked: <= 0.4) and the largest difference between the stacked and
the alone grid: every metric of every run, every predicted probability, the predictions and
epoch counts that differ (equal up to float rounding; rounding can flip a near tie of the
dev score, and then a run stops at another epoch).
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


def sweep(seeds: int = 5, batch: int = 64, steps: int = 20) -> None:
    """One train step (forward, loss, backward, AdamW step) of `seeds` late-fusion MLPs (two modalities of
    width d, hidden h), one at a time vs stacked under torch.vmap, for growing sizes: the crossover is
    where fit/seeds.py's auto mode stops stacking on a CPU. Best of two alternating timings each."""
    import copy

    import torch
    from torch import nn

    def mlp(d, h):
        return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 3))

    class Late(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.t, self.i = mlp(d, h), mlp(d, h)

        def forward(self, xt, xi):
            return self.t(xt).log_softmax(-1) + self.i(xi).log_softmax(-1)

    rows = []
    for d, h in [(16, 64), (64, 128), (128, 256), (256, 256), (384, 256), (1280, 256)]:
        heads = [Late(d, h) for _ in range(seeds)]
        xt, xi = torch.randn(seeds, batch, d), torch.randn(seeds, batch, d)
        y = torch.randint(0, 3, (seeds, batch))

        def alone(n):
            opts = [torch.optim.AdamW(m.parameters()) for m in heads]
            for _ in range(n):
                for s in range(seeds):
                    loss = nn.functional.nll_loss(heads[s](xt[s], xi[s]), y[s])
                    opts[s].zero_grad()
                    loss.backward()
                    opts[s].step()

        params, _ = torch.func.stack_module_state(heads)
        base = copy.deepcopy(heads[0]).to("meta")
        forward = torch.func.vmap(lambda p, a, b: torch.func.functional_call(base, p, (a, b)))

        def stacked(n):
            opt = torch.optim.AdamW(list(params.values()))
            for _ in range(n):
                out = forward(params, xt, xi)
                loss = sum(nn.functional.nll_loss(out[s], y[s]) for s in range(seeds))
                opt.zero_grad()
                loss.backward()
                opt.step()

        best = {}
        for _ in range(2):
            for name, fn in (("alone", alone), ("stacked", stacked)):
                fn(3)
                t = time.perf_counter()
                fn(steps)
                best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t) / steps)
        n = sum(p.numel() for p in heads[0].parameters())
        rows.append([f"{d} / {h}", f"{n:,}", 1e3 * best["alone"], 1e3 * best["stacked"], best["stacked"] / best["alone"]])
        print(f"  d {d}, h {h}: {n:,} parameters per seed, stacked / alone {best['stacked'] / best['alone']:.2f}",
              flush=True)
    print()
    common.print_table(["d / hidden", "parameters per seed", f"{seeds} seeds alone ms/step", "stacked ms/step",
                        "stacked / alone"], rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", default="late,ae-cat")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--worlds", default="384x1280,32x32", help="text x image feature widths, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="time each way R times, alternating; the best counts")
    ap.add_argument("--dir", type=Path, default=common.SCRATCH / "seeds")
    ap.add_argument("--sweep", action="store_true", help="only the step-level sweep over head sizes (about 1 min)")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    common.print_machine("bench/seeds.py: seeds of a configuration trained together vs one at a time")
    if args.sweep:
        sweep(args.seeds)
        common.print_load()
        return 0

    from msa_cache.fit.config import TrainConfig
    from msa_cache.fit.features import resolve_caches
    from msa_cache.manifest import read_manifest
    from msa_cache.study.compare import compare

    heads = [h for h in args.heads.split(",") if h]
    train = TrainConfig(max_epochs=args.max_epochs)
    seeds = list(range(args.seeds))
    quiet = lambda line: None  # noqa: E731
    rows = []
    for world in [w for w in args.worlds.split(",") if w]:
        dims = tuple(int(x) for x in world.split("x"))
        t0 = time.perf_counter()
        manifest, cache_root = pooled_world.ensure_world(dims=dims)
        print(f"world {world}: {manifest} ({time.perf_counter() - t0:.1f} s to write or find)", flush=True)
        caches = resolve_caches(read_manifest(manifest), cache_root, None, None)
        scratch = args.dir / world

        def grid(batch, runs: Path, log=quiet) -> tuple[float, list[Path]]:
            shutil.rmtree(runs, ignore_errors=True)
            t = time.perf_counter()
            entries = compare(manifest, caches, heads, {}, seeds, train, runs, log=log, batch_seeds=batch)
            seconds = time.perf_counter() - t
            return seconds, sorted((r.path for e in entries for r in e.results), key=lambda p: (p.parent.name, p.name))

        # warm-up (first-call allocations and lazy imports of torch.func, the page cache): not timed
        compare(manifest, caches, heads, {}, seeds[:2], TrainConfig(max_epochs=1), scratch / "warm", log=quiet,
                batch_seeds=True)
        times: dict[str, list[float]] = {}
        runs: dict[str, list[Path]] = {}
        notes: list[str] = []
        for _ in range(args.repeats):
            for name, batch in (("alone", False), ("stacked", True), ("auto", None)):
                log = (lambda line: notes.append(line) if "one at a time" in line else None) if name == "auto" else quiet
                seconds, runs[name] = grid(batch, scratch / name, log)
                times.setdefault(name, []).append(seconds)
                print(f"  {world} {name:<8} {seconds:.1f} s (load {common.load_average()})", flush=True)
        for line in dict.fromkeys(notes):
            print(f"  auto: {line}")
        best = {k: min(v) for k, v in times.items()}
        metric, prob, preds, epochs = differences(runs["alone"], runs["stacked"])
        same = all(a.relative_to(scratch / "alone") == b.relative_to(scratch / "stacked")
                   for a, b in zip(runs["alone"], runs["stacked"]))
        rows.append([world, len(runs["alone"]), best["alone"], best["stacked"], best["auto"],
                     best["stacked"] / best["alone"], "met" if best["stacked"] / best["alone"] <= 0.4 else "MISSED",
                     best["auto"] / best["alone"], metric, prob, preds, epochs, same])
    print()
    common.print_table(
        ["world (text x image)", "runs", "alone s", "stacked s", "auto s", "stacked / alone", "target <= 0.4",
         "auto / alone", "max metric diff", "max prob diff", "preds differing", "runs with other epoch count",
         "same run folders"], rows)
    print(f"grid: compare --heads {args.heads} --seeds {args.seeds} --max-epochs {args.max_epochs}")
    common.print_load()
    return 0


if __name__ == "__main__":
    sys.exit(main())
