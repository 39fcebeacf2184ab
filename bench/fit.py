"""Training time per epoch: a head on cached features vs the same head fed by the
frozen encoders run on the fly (how the seed papers train).

    python bench/fit.py [--rows 256] [--heads ae-cat,ab-cat] [--epochs 3] [--threads N]

cached:  `fit_run` (the real trainer, default TrainConfig: batch 64, workers 0) on
         the real MVSA-Single caches cache/mvsa-single/{minilm,efficientnet-lite0};
         seconds per epoch from its history.jsonl (training only, the dev pass
         excluded), median over --epochs epochs, divided by the 3,611 train rows.
on the fly: the first --rows train rows (default 256; it is slow), one epoch:
         for each batch of 64, decode the images and tokenise (DataLoader with the
         same dataset, collator and worker count as extraction, which is generous to
         this arm), forward MiniLM and EfficientNet-Lite0 under no_grad, then the
         same head's training step (forward, loss, backward, optimizer step).
Per-row times are compared: ratio = on-the-fly s/row / cached s/row
(target >= 100x for the pooled head ae-cat).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from msa_cache.encoders import build_encoder  # noqa: E402
from msa_cache.encoders.base import Collator  # noqa: E402
from msa_cache.extract.dataset import RowDataset  # noqa: E402
from msa_cache.extract.pipeline import default_workers  # noqa: E402
from msa_cache.heads import Batch, ModalityInput, create_head  # noqa: E402
from msa_cache.manifest import read_manifest  # noqa: E402
from msa_cache.fit.config import RunSpec, TrainConfig  # noqa: E402
from msa_cache.fit.features import open_features  # noqa: E402
from msa_cache.fit.trainer import fit_run, make_optimizer  # noqa: E402
from msa_cache.train.loop import seed_everything  # noqa: E402

CACHE = common.REPO / "cache" / "mvsa-single"
TEXT, IMAGE = "minilm", "efficientnet-lite0"


def cached_arm(head: str, epochs: int, runs_root: Path) -> dict:
    """Median seconds per training epoch of the real trainer on the real caches."""
    tc = TrainConfig(max_epochs=epochs, patience=epochs + 1)
    spec = RunSpec(str(common.MVSA_MANIFEST), {"text": str(CACHE / TEXT), "image": str(CACHE / IMAGE)}, head, {}, tc, 0)
    c0 = common.cpu_seconds()
    result = fit_run(spec, runs_root, log=lambda m: None)
    cpu_total = common.cpu_seconds() - c0
    history = [json.loads(line) for line in (result.path / "history.jsonl").read_text().splitlines()]
    secs = [h["seconds"] for h in history if "seconds" in h]
    man = read_manifest(common.MVSA_MANIFEST)
    train_rows = int(((np.array(man.column("split")) == "train") & (man.labels() >= 0)).sum())
    return {"epoch_s": statistics.median(secs), "epochs": secs, "rows": train_rows,
            "s_per_row": statistics.median(secs) / train_rows, "run_s": result.seconds, "run_cpu_s": cpu_total}


def on_the_fly_arm(head_name: str, rows: int, encoders: dict, batch_size: int, seed: int = 0) -> dict:
    """One epoch over the first `rows` train rows with the frozen encoders run for every batch."""
    manifest = common.head_of_manifest(common.MVSA_MANIFEST, rows, common.SCRATCH / "fit", split="train")
    text_enc, image_enc = encoders[TEXT], encoders[IMAGE]
    features = open_features(read_manifest(common.MVSA_MANIFEST), {"text": CACHE / TEXT, "image": CACHE / IMAGE})
    seed_everything(seed)
    head = create_head(head_name, features.spec(), len(manifest.classes))  # same dims as the cached arm's head
    spec = RunSpec(str(common.MVSA_MANIFEST), {}, head_name, {}, TrainConfig(), seed)
    optimizer = make_optimizer(head, spec)
    labels = torch.from_numpy(manifest.labels())
    loader = torch.utils.data.DataLoader(
        RowDataset(manifest, text_enc.text, image_enc.image), batch_size=batch_size, shuffle=True,
        num_workers=default_workers(), collate_fn=Collator(text_enc.text, image_enc.image))
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    head.train()
    with common.timer(wall, "epoch", cpu):
        for batch in loader:
            with torch.no_grad():
                t = text_enc.forward({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
                i = image_enc.forward({"pixel_values": batch["pixel_values"]})
            idx = batch["rows"]
            b = Batch(inputs={"text": ModalityInput(t["text/cls"], t["text/tokens"], t["text/mask"].bool()),
                              "image": ModalityInput(i["image/pooled"], i["image/tokens"], None)},
                      labels=labels[idx], ids=[str(x) for x in idx.tolist()])
            out = head(b)
            loss, _ = head.loss(out, b, None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return {"epoch_s": wall["epoch"], "cpu_s": cpu["epoch"], "rows": rows, "s_per_row": wall["epoch"] / rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256, help="train rows of the on-the-fly arm (default 256)")
    ap.add_argument("--heads", default="ae-cat,ab-cat", help="a pooled and a token head (default ae-cat,ab-cat)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the cached arm (median taken)")
    ap.add_argument("--batch-size", type=int, default=64, help="batch of the on-the-fly arm (trainer default 64)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    missing = [p for p in (common.MVSA_MANIFEST, CACHE / TEXT / "index.json", CACHE / IMAGE / "index.json")
               if not p.is_file()]
    if missing:
        print(f"needs the MVSA-Single manifest and its minilm + efficientnet-lite0 caches; missing {missing}")
        return 0

    common.print_machine("bench/fit.py: seconds per row of one training epoch, cached features vs encoders on the fly")
    heads = [h for h in args.heads.split(",") if h]
    encoders = {name: build_encoder(name) for name in (TEXT, IMAGE)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="fit-", dir=common.SCRATCH) as runs_root:
        for head in heads:
            cached = cached_arm(head, args.epochs, Path(runs_root))
            fly = on_the_fly_arm(head, args.rows, encoders, args.batch_size)
            ratio = fly["s_per_row"] / cached["s_per_row"]
            print(f"{head}: cached epochs {[round(s, 3) for s in cached['epochs']]} s over {cached['rows']} rows; "
                  f"on the fly {fly['epoch_s']:.1f} s over {fly['rows']} rows ({1e3 * fly['cpu_s'] / fly['rows']:.0f} "
                  f"CPU ms/row)", flush=True)
            rows.append([head, cached["epoch_s"], 1e3 * cached["s_per_row"],
                         fly["epoch_s"] * cached["rows"] / fly["rows"], 1e3 * fly["s_per_row"], ratio])
    print()
    common.print_table(["head", "cached: s/epoch (3,611 rows)", "cached: ms/row",
                        "on the fly: s/epoch (scaled to 3,611 rows)", "on the fly: ms/row", "ratio (ae-cat >= 100)"],
                       rows)
    for r in rows:
        if r[0] == "ae-cat":
            print(f"\ntarget ae-cat >= 100x: {r[5]:,.0f}x ({'met' if r[5] >= 100 else 'MISSED'})")
    common.print_load()
    return 0


if __name__ == "__main__":
    sys.exit(main())
