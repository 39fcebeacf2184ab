"""Does training stay flat in time per row and in memory as the cache grows?

    python bench/scale.py [--rows 5000,50000] [--pooled-rows 200000] [--heads ae-cat,ab-cat] [--threads 1]

Caches of made-up features, written by the real extraction writer (`extract()` with
`ArrayEncoder` + `random_rows`, one row generated at a time), sized like MiniLM +
EfficientNet-Lite0 (fp16):
  token caches (one per --rows value): text cls + mean [384], tokens [128, 384] + mask
      [128] (8..64 real tokens), image pooled [1280] + tokens [49, 1280]: ~220 KiB/row,
      so 50k rows are ~11 GB on disk (the free space is checked first);
  a pooled-only cache of --pooled-rows rows (TumEmo size): text cls + mean, image pooled.
Each has a manifest with an 80/10/10 train/dev/test split and random labels. The
caches are kept under /tmp/msa-bench/scale (or $MSA_BENCH_DIR/scale), so a rerun skips
writing them (extract() skips finished shards).

Each measurement runs in its own subprocess (peak RSS = that process's VmHWM): open
the caches (pooled features are loaded into memory, as the trainer does), a 2-batch
warm-up, then one timed training epoch of the head over the train rows with the
trainer's own loop (`train_loop`, default TrainConfig: batch 64, workers 0; no dev
pass), with 1 torch thread unless --threads says otherwise. Reports seconds per row
and peak RSS, and the ratios largest/smallest token cache (targets: peak RSS ratio
<= 1.3, time per row flat).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TEXT_D, IMAGE_D, TEXT_L, IMAGE_P = 384, 1280, 128, 49
TOKEN_SHAPES = {
    "text": {"text/cls": (TEXT_D,), "text/mean": (TEXT_D,), "text/tokens": (TEXT_L, TEXT_D), "text/mask": (TEXT_L,)},
    "image": {"image/pooled": (IMAGE_D,), "image/tokens": (IMAGE_P, IMAGE_D)},
}
POOLED_SHAPES = {"text": {"text/cls": (TEXT_D,), "text/mean": (TEXT_D,)}, "image": {"image/pooled": (IMAGE_D,)}}
CLASSES = ["positive", "neutral", "negative"]


def bytes_per_row(shapes: dict) -> int:
    import numpy as np

    return sum(int(np.prod(s)) * (1 if name.endswith("/mask") else 2) for m in shapes.values() for name, s in m.items())


def make_manifest(root: Path, n: int, kind: str) -> Path:
    """scale-<kind>-<n>.parquet: ids r0.., 80/10/10 split, random labels (deterministic, so reruns match)."""
    import numpy as np

    from msa_cache.manifest import ManifestMeta, read_manifest, rows_to_table, write_manifest

    path = root / "manifests" / f"scale-{kind}-{n}.parquet"
    if path.is_file():
        try:
            if len(read_manifest(path)) == n:
                return path
        except Exception:
            pass
    rng = np.random.default_rng(n)
    labels = rng.integers(0, len(CLASSES), n)
    cut = np.array([0.8, 0.9]) * n
    rows = [{"id": f"r{i}", "text": "", "image": "none.jpg", "label": int(labels[i]),
             "split": "train" if i < cut[0] else "dev" if i < cut[1] else "test"} for i in range(n)]
    meta = ManifestMeta(dataset=f"scale-{kind}-{n}", classes=CLASSES, root=str(root), builder="bench/scale.py")
    return write_manifest(rows_to_table(rows), meta, path)


def ensure_caches(root: Path, n: int, kind: str) -> tuple[Path, dict[str, Path], float]:
    """Manifest and caches of n rows (kind 'tokens' or 'pooled'); seconds spent writing (0 if reused)."""
    from msa_cache.encoders.synthetic import ArrayEncoder, random_rows
    from msa_cache.extract import extract

    shapes = TOKEN_SHAPES if kind == "tokens" else POOLED_SHAPES
    manifest = make_manifest(root, n, kind)
    encoders = [ArrayEncoder(f"bench-{m}", m, shapes[m], random_rows(shapes[m], seed=i, real_tokens=(8, 64)),
                             tag="bench/scale v1") for i, m in enumerate(("text", "image"))]
    t0 = time.perf_counter()
    report = extract(manifest, encoders, out=root / "cache", workers=0, progress=False, log=lambda m: None)
    secs = time.perf_counter() - t0
    computed = sum(e.rows_computed for e in report.encoders)
    if not all(e.complete for e in report.encoders):
        raise RuntimeError(report.summary())
    folder = root / "cache" / manifest.stem
    return manifest, {m: folder / f"bench-{m}" for m in ("text", "image")}, secs if computed else 0.0


def child(job: dict) -> None:
    """One measurement: open the caches, train one epoch, report seconds and (via child_result) peak RSS."""
    import numpy as np
    import torch

    common.set_threads(job.get("threads"))
    from msa_cache.heads import create_head
    from msa_cache.manifest import read_manifest
    from msa_cache.fit.config import RunSpec, TrainConfig
    from msa_cache.fit.features import open_features
    from msa_cache.fit.trainer import train_loop
    from msa_cache.train.loop import manifest_labels, seed_everything

    rss_imports = common.rss_mib()
    t0 = time.perf_counter()
    manifest = read_manifest(job["manifest"])
    caches = {k: Path(v) for k, v in job["caches"].items()}
    tc = TrainConfig(max_epochs=1, patience=1)
    spec = RunSpec(job["manifest"], job["caches"], job["head"], {}, tc, 0)
    features = open_features(manifest, caches, text_pool=tc.text_pool)
    features.load_pooled()
    seed_everything(0)
    labels, modality_labels = manifest_labels(manifest)
    train_idx = np.flatnonzero((np.array(manifest.column("split")) == "train") & (labels >= 0))
    open_s = time.perf_counter() - t0
    rss_open = common.rss_mib()
    no_dev = np.array([], dtype=np.int64)

    def epoch(idx):
        seed_everything(0)
        head = create_head(job["head"], features.spec(), len(manifest.classes))
        return train_loop(head, spec, features, idx, no_dev, labels, modality_labels, None, torch.device("cpu"))

    epoch(train_idx[:2 * tc.batch_size])  # warm-up (lazy imports, first-call allocations); not timed
    history = epoch(train_idx)
    epoch_s = history[0]["seconds"]
    common.child_result({"rows": len(manifest), "train_rows": int(len(train_idx)), "epoch_s": epoch_s,
                         "open_s": open_s, "rss_imports_mib": rss_imports, "rss_after_open_mib": rss_open})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="5000,50000", help="sizes of the token caches (default 5000,50000)")
    ap.add_argument("--pooled-rows", type=int, default=200000, help="size of the pooled-only cache (0: skip)")
    ap.add_argument("--heads", default="ae-cat,ab-cat", help="a pooled head and a token head (default ae-cat,ab-cat)")
    ap.add_argument("--dir", type=Path, default=common.SCRATCH / "scale", help="where the caches are kept")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads of each measurement (default 1: on a shared CPU more threads "
                         "spin-wait and bury the size effect in noise; 0 = torch's default, one per core)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    common.set_threads(args.threads)

    sizes = [int(x) for x in args.rows.split(",") if x]
    heads = [h for h in args.heads.split(",") if h]
    common.print_machine("bench/scale.py: one training epoch on caches of growing size (time per row, peak RSS)")
    need = sum(n * bytes_per_row(TOKEN_SHAPES) for n in sizes) + args.pooled_rows * bytes_per_row(POOLED_SHAPES)
    ok, free = common.check_disk(args.dir, 0)
    print(f"caches under {args.dir}: {need / 1e9:.1f} GB in all (less what is already there); "
          f"{free / 1e9:.0f} GB free on its file system")

    from msa_cache.heads import get_head

    jobs = []  # (kind, rows, head, manifest, caches)
    for kind, n_list in (("tokens", sizes), ("pooled", [args.pooled_rows] if args.pooled_rows else [])):
        for n in n_list:
            folder = args.dir / "cache" / f"scale-{kind}-{n}"
            existing = sum(p.stat().st_size for p in folder.rglob("*.h5")) if folder.is_dir() else 0
            shapes = TOKEN_SHAPES if kind == "tokens" else POOLED_SHAPES
            ok, free = common.check_disk(args.dir, n * bytes_per_row(shapes) - existing)
            if not ok:
                print(f"SKIPPED {kind} {n}: needs {(n * bytes_per_row(shapes) - existing) / 1e9:.1f} GB more, "
                      f"{free / 1e9:.1f} GB free; pass a smaller --rows")
                continue
            manifest, caches, secs = ensure_caches(args.dir, n, kind)
            print(f"cache {kind} {n:,} rows: " + (f"written in {secs:.0f} s ({secs / n * 1e3:.2f} ms/row)"
                                                 if secs else "reused (already complete)"), flush=True)
            for head in heads:
                if kind == "pooled" and get_head(head).uses_tokens:
                    continue
                jobs.append((kind, n, head, manifest, caches))

    results = []
    for kind, n, head, manifest, caches in jobs:
        r = common.run_child(__file__, {"manifest": str(manifest), "caches": {k: str(v) for k, v in caches.items()},
                                        "head": head, "threads": args.threads})
        r.update(kind=kind, head=head)
        results.append(r)
        print(f"  {head} on {kind} {n:,}: epoch {r['epoch_s']:.1f} s over {r['train_rows']:,} train rows, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB (load {common.load_average()})", flush=True)

    print()
    common.print_table(
        ["head", "cache", "rows", "train rows", "epoch s", "ms/row", "open + pooled load s", "RSS after imports MiB",
         "RSS after open MiB", "peak RSS MiB"],
        [[r["head"], r["kind"], f"{r['rows']:,}", f"{r['train_rows']:,}", r["epoch_s"],
          1e3 * r["epoch_s"] / r["train_rows"], r["open_s"], r["rss_imports_mib"], r["rss_after_open_mib"],
          r["peak_rss_mib"]] for r in results])
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        ratio_rows = []
        for head in heads:
            a = next((r for r in results if r["kind"] == "tokens" and r["rows"] == lo and r["head"] == head), None)
            b = next((r for r in results if r["kind"] == "tokens" and r["rows"] == hi and r["head"] == head), None)
            if a and b:
                rss = b["peak_rss_mib"] / a["peak_rss_mib"]
                tpr = (b["epoch_s"] / b["train_rows"]) / (a["epoch_s"] / a["train_rows"])
                ratio_rows.append([head, f"{hi:,} / {lo:,}", rss, "met" if rss <= 1.3 else "MISSED", tpr])
        print()
        common.print_table(["head", "token caches", "peak RSS ratio", "target <= 1.3", "time/row ratio (flat = 1)"],
                           ratio_rows)
    common.print_load()
    return 0


if __name__ == "__main__":
    sys.exit(main())
