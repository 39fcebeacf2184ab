"""Extraction speed, three ways, on the same encoders and the same MVSA-Single rows.

    python bench/extract.py [--rows 512] [--repeats 1] [--threads N] [--encoders minilm,efficientnet-lite0]

(a) seed-002 way: a Python loop that, for ONE post at a time, calls the HF tokenizer
    and the model, opens + transforms the image and calls the CNN (no batching,
    no workers), under torch.no_grad.
(b) the limit: the bare batched forward (`Encoder.forward`, batch 32, inference
    mode) on inputs decoded and tokenised beforehand (not timed).
(c) `msa-cache extract` end to end: the `extract()` API with default settings into
    a fresh temporary folder, decoding and HDF5 writes included (the model weights
    are loaded before the clock starts, as in (a) and (b); the weights hash, plan
    and DataLoader start-up are inside it).

Prints samples/s per encoder and for both together (the time of both over the
same rows), and the ratios c/b (target >= 0.85) and c/a (target >= 5).
With --repeats R > 1 each arm keeps its fastest repeat (the machine is shared).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from msa_cache.encoders import build_encoder  # noqa: E402
from msa_cache.extract import ExtractConfig, extract  # noqa: E402
from msa_cache.extract.dataset import RowDataset  # noqa: E402

TEXT, IMAGE = "minilm", "efficientnet-lite0"


def seed_loop(manifest, encoders: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(a) one post at a time: tokenizer + model, image open + transform + CNN.
    Wall and CPU seconds per encoder."""
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    texts = manifest.column("text")
    paths = [str(manifest.image_path(p)) for p in manifest.column("image")]
    text_enc, image_enc = encoders.get(TEXT), encoders.get(IMAGE)
    transform = image_enc.image.transform() if image_enc is not None else None
    with torch.no_grad():
        for text, path in zip(texts, paths):
            if text_enc is not None:
                with common.timer(wall, TEXT, cpu):
                    tok = text_enc.text.tokenizer(text_enc.text.prepare(text), padding="max_length", truncation=True,
                                                  max_length=text_enc.text.max_length, return_tensors="pt")
                    out = text_enc.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
                    out.last_hidden_state.numpy()
            if image_enc is not None:
                with common.timer(wall, IMAGE, cpu):
                    with Image.open(path) as im:
                        x = transform(im.convert("RGB")).unsqueeze(0)
                    image_enc.model(x).numpy()
    return wall, cpu


def prepared_batches(manifest, encoder, batch_size: int) -> list[dict]:
    """Inputs of (b): decoded and tokenised by the pipeline's own dataset and collator, untimed."""
    ds = RowDataset(manifest, encoder.text, encoder.image)
    collate = encoder.collator()
    out = []
    for s in range(0, len(manifest), batch_size):
        batch = collate([ds[i] for i in range(s, min(s + batch_size, len(manifest)))])
        out.append({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    return out


def bare_forward(encoder, batches: list[dict]) -> tuple[float, float]:
    """(b) wall and CPU seconds of Encoder.forward over prepared batches."""
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with common.timer(wall, "b", cpu), torch.inference_mode():
        for b in batches:
            for v in encoder.forward(b).values():
                v.numpy()
    return wall["b"], cpu["b"]


def end_to_end(manifest, name: str, scratch: Path) -> tuple[float, float, float]:
    """(c) wall and CPU seconds (workers included) of extract() with default settings (fresh encoder,
    fresh folder), and the seconds extract() itself reports for its row loop (DataLoader + model + writer)."""
    encoder = build_encoder(name)  # loading the weights is outside the clock, as in (a) and (b)
    out = Path(tempfile.mkdtemp(prefix="extract-", dir=scratch))
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        with common.timer(wall, "c", cpu):
            report = extract(manifest, [encoder], out=out, progress=False, log=lambda m: None)
        enc = report.encoders[0]
        if not enc.complete or enc.rows_computed != len(manifest):
            raise RuntimeError(f"extract did not finish: {enc.summary()}")
        return wall["c"], cpu["c"], enc.seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 512 = 16 batches: extract() is a pipeline (decode | model | write) whose fill and drain cost about one
    # batch, which at 128 rows (4 batches) alone would pull c/b down by up to 20 %.
    ap.add_argument("--rows", type=int, default=512, help="first N rows of the manifest (default 512)")
    ap.add_argument("--manifest", type=Path, default=common.MVSA_MANIFEST)
    ap.add_argument("--encoders", default=f"{TEXT},{IMAGE}", help=f"comma list out of {TEXT},{IMAGE}")
    ap.add_argument("--batch-size", type=int, default=ExtractConfig.batch_size,
                    help=f"batch of (b); extract()'s default is {ExtractConfig.batch_size}")
    ap.add_argument("--repeats", type=int, default=1, help="repeat every arm; keep the fastest")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, one per core)")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    names = [n for n in args.encoders.split(",") if n]
    if any(n not in (TEXT, IMAGE) for n in names):
        ap.error(f"--encoders: choose from {TEXT},{IMAGE}")
    if not args.manifest.is_file():
        print(f"needs the MVSA-Single manifest {args.manifest} (see README: msa-cache manifest clmlf ...)")
        return 0

    common.print_machine("bench/extract.py: extraction samples/s, (a) seed loop, (b) bare batched forward, "
                         "(c) extract() end to end")
    scratch = common.SCRATCH / "extract"
    scratch.mkdir(parents=True, exist_ok=True)
    manifest = common.head_of_manifest(args.manifest, args.rows, scratch)
    n = len(manifest)
    print(f"rows: the first {n} of {args.manifest.name}; batch {args.batch_size}; repeats {args.repeats}")

    encoders = {name: build_encoder(name) for name in names}
    batches = {name: prepared_batches(manifest, enc, args.batch_size) for name, enc in encoders.items()}
    with torch.inference_mode():  # warm-up: first calls allocate and pick kernels
        for name, enc in encoders.items():
            enc.forward({k: v[:2] for k, v in batches[name][0].items()})

    best: dict[tuple[str, str], tuple[float, float]] = {}  # (arm, encoder) -> (wall, cpu) of the fastest repeat
    loop_secs: dict[str, float] = {}

    def keep(arm: str, name: str, wall: float, cpu: float) -> None:
        if (arm, name) not in best or wall < best[arm, name][0]:
            best[arm, name] = (wall, cpu)

    for _ in range(args.repeats):
        walls, cpus = seed_loop(manifest, encoders)
        for name in names:
            keep("a", name, walls[name], cpus[name])
        for name, enc in encoders.items():
            keep("b", name, *bare_forward(enc, batches[name]))
        for name in names:
            wall, cpu, inner = end_to_end(manifest, name, scratch)
            keep("c", name, wall, cpu)
            loop_secs[name] = min(loop_secs.get(name, float("inf")), inner)

    rows, cpu_rows = [], []
    for label, group in [*[(name, [name]) for name in names], *([("both", names)] if len(names) > 1 else [])]:
        wall = {arm: sum(best[arm, g][0] for g in group) for arm in "abc"}
        cpu = {arm: sum(best[arm, g][1] for g in group) for arm in "abc"}
        sps = {arm: n / wall[arm] for arm in "abc"}
        loop = sum(loop_secs[g] for g in group)
        rows.append([label, sps["a"], sps["b"], sps["c"], n / loop, sps["c"] / sps["b"], sps["c"] / sps["a"]])
        cpu_rows.append([label, *(1e3 * cpu[arm] / n for arm in "abc"), cpu["b"] / cpu["c"], cpu["a"] / cpu["c"]])
    print()
    common.print_table(["encoder", "(a) seed loop /s", "(b) bare forward /s", "(c) extract() /s",
                        "(c) row loop only /s", "c/b (>= 0.85)", "c/a (>= 5)"], rows)
    print("\nCPU ms per sample (all threads and worker processes; less sensitive to the machine's other load):")
    common.print_table(["encoder", "(a) seed loop", "(b) bare forward", "(c) extract()", "cpu b/c", "cpu a/c"],
                       cpu_rows)
    both = rows[-1]
    print(f"\ntargets ({both[0]}): c/b = {both[5]:.2f} ({'met' if both[5] >= 0.85 else 'MISSED'}), "
          f"c/a = {both[6]:.1f} ({'met' if both[6] >= 5 else 'MISSED'})")
    print("'(c) row loop only' = the seconds extract() reports for its DataLoader + model + writer loop, "
          "without plan, weights hash and shard set-up.")
    common.print_load()
    return 0


if __name__ == "__main__":
    sys.exit(main())
