"""The trainer's overhead on a pooled-head epoch: fit's train_loop vs a bare loop over the same tensors.

    python bench/epoch.py [--heads late,ae-cat] [--repeats 3] [--threads 1]

On the MVSA-Single-sized world of pooled features (bench/pooled_world.py: 3,611 train rows,
384-d text + 1,280-d image, fp16 in the cache), one training epoch of each head (default
options, batch 64), two ways, alternating, --repeats times (the best time of each counts):
  trainer   fit/trainer.py's train_loop (what `fit` runs: the epoch order, the batches from
            the FeatureSet, the train step, the loss terms of history.jsonl), no dev pass;
  bare      the same head, seed and optimizer in a plain loop: the train rows' features as
            float32 tensors made once, then per batch index them, forward, the head's loss,
            backward, optimizer step; nothing else.
Prints seconds per epoch and bare / trainer (target >= 0.7: the trainer adds little).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import pooled_world  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", default="late,ae-cat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's default)")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    common.print_machine("bench/epoch.py: one pooled-head epoch, fit's trainer vs a bare loop")

    import numpy as np
    import torch

    from msa_cache.fit.config import RunSpec, TrainConfig
    from msa_cache.fit.features import open_features, resolve_caches
    from msa_cache.fit.trainer import make_optimizer, train_loop
    from msa_cache.heads import Batch, ModalityInput, create_head
    from msa_cache.manifest import read_manifest
    from msa_cache.train.loop import manifest_labels, seed_everything

    manifest_path, cache_root = pooled_world.ensure_world()
    manifest = read_manifest(manifest_path)
    caches = resolve_caches(manifest, cache_root, None, None)
    tc = TrainConfig(max_epochs=1, patience=1)
    features = open_features(manifest, caches, text_pool=tc.text_pool)
    features.load_pooled()
    labels, modality_labels = manifest_labels(manifest)
    train_idx = np.flatnonzero((np.array(manifest.column("split")) == "train") & (labels >= 0))
    no_dev = np.array([], dtype=np.int64)
    cpu = torch.device("cpu")
    print(f"world: {manifest_path}: {len(train_idx):,} train rows, "
          + ", ".join(f"{m} {tuple(x.shape[1:])}" for m, x in features.pooled.items()), flush=True)

    def trainer(head_name: str) -> float:
        spec = RunSpec(str(manifest_path), {k: str(v) for k, v in caches.items()}, head_name, {}, tc, 0)
        seed_everything(0)
        head = create_head(head_name, features.spec(), len(manifest.classes))
        t = time.perf_counter()
        train_loop(head, spec, features, train_idx, no_dev, labels, modality_labels, None, cpu)
        return time.perf_counter() - t

    # the bare loop's inputs: made once, outside the timing (a plain loop would hold them so)
    x = {m: features.pooled[m][train_idx].float() for m in features.pooled}
    y = torch.from_numpy(labels[train_idx])

    def bare(head_name: str) -> float:
        spec = RunSpec(str(manifest_path), {}, head_name, {}, tc, 0)
        seed_everything(0)
        head = create_head(head_name, features.spec(), len(manifest.classes))
        optimizer = make_optimizer(head, spec)
        order = torch.from_numpy(np.random.default_rng(0).permutation(len(train_idx)))
        head.train()
        t = time.perf_counter()
        for start in range(0, len(order), tc.batch_size):
            idx = order[start:start + tc.batch_size]
            batch = Batch({m: ModalityInput(v[idx]) for m, v in x.items()}, y[idx])
            loss, _ = head.loss(head(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - t

    heads = [h for h in args.heads.split(",") if h]
    for h in heads:  # warm-up: first-call allocations, not timed
        trainer(h), bare(h)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for h in heads:
            for name, fn in (("trainer", trainer), ("bare", bare)):
                times.setdefault((h, name), []).append(fn(h))
        print(f"  repeat done (load {common.load_average()})", flush=True)
    rows = []
    for h in heads:
        t, b = min(times[(h, "trainer")]), min(times[(h, "bare")])
        rows.append([h, len(train_idx), t, b, b / t, "met" if b / t >= 0.7 else "MISSED"])
    print()
    common.print_table(["head", "train rows", "trainer s/epoch", "bare s/epoch", "bare / trainer", "target >= 0.7"],
                       rows)
    common.print_load()
    return 0


if __name__ == "__main__":
    sys.exit(main())
