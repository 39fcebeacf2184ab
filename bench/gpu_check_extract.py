"""bench/gpu_check.py, section 1: extraction speed, (b) the bare batched forward vs (c) extract() end to end,
and the fewest decode workers that keep the GPU fed."""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from gpu_check_core import (EXTRACT_EXTRA, EXTRACT_MAIN, Context, Report, c_workers, encoder_on_device,  # noqa: E402
                            free_memory, one_line, sync)

import torch  # noqa: E402

from msa_cache.extract import extract  # noqa: E402
from msa_cache.extract.dataset import RowDataset  # noqa: E402
from msa_cache.extract.runner import AUTOCAST, resolve_autocast  # noqa: E402


def prepared_batches(ctx: Context, enc, batch_size: int) -> list[dict]:
    """Model inputs decoded and tokenised by extract()'s own dataset and collator (untimed). Where worker
    processes fail (e.g. a /dev/shm too small for their batches), they are decoded in this process instead,
    so (b) is still measured; (c) then records the failure."""
    def batches(workers: int) -> list[dict]:
        loader = torch.utils.data.DataLoader(RowDataset(ctx.manifest, enc.text, enc.image), batch_size=batch_size,
                                             num_workers=workers, collate_fn=enc.collator())
        return [{k: v for k, v in b.items() if torch.is_tensor(v)} for b in loader]

    try:
        return batches(ctx.prep_workers)
    except RuntimeError as e:
        if ctx.prep_workers == 0:
            raise
        print(f"preparing (b)'s inputs with {ctx.prep_workers} workers failed ({e}); decoding in-process",
              file=sys.stderr, flush=True)
        return batches(0)


def split_batches(batches: list[dict], size: int) -> list[dict]:
    out = []
    for b in batches:
        n = len(b["rows"])
        out += [{k: v[i:i + size] for k, v in b.items()} for i in range(0, n, size)]
    return out


def bare_forward(enc, batches: list[dict], device: torch.device, repeats: int) -> float:
    """(b) samples/s of Encoder.forward with the inputs already on the device, under extract()'s autocast."""
    inputs = [{k: v.to(device) for k, v in b.items()} for b in batches]
    mode = resolve_autocast("auto", device)
    cast = (lambda: torch.autocast(device.type, dtype=AUTOCAST[mode])) if mode != "off" else contextlib.nullcontext
    n = sum(len(b["rows"]) for b in inputs)
    with torch.inference_mode(), cast():
        enc.forward(inputs[0])  # warm-up: kernel choice, autocast weight casts
        sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x in inputs:
                enc.forward(x)
            sync(device)
            times.append(time.perf_counter() - t0)
    return n / min(times)


def end_to_end(ctx: Context, enc, batch_size: int, workers: int, log: list | None = None) -> dict:
    """(c) extract() into a fresh folder: samples/s (wall), its own row-loop samples/s, CPU ms per sample."""
    out = Path(tempfile.mkdtemp(prefix="extract-", dir=ctx.scratch))
    log = [] if log is None else log
    try:
        c0, t0 = common.cpu_seconds(), time.perf_counter()
        report = extract(ctx.manifest, [enc], out=out, batch_size=batch_size, workers=workers, progress=False,
                         log=log.append)
        wall, cpu = time.perf_counter() - t0, common.cpu_seconds() - c0
        er = report.encoders[0]
        n = len(ctx.manifest)
        if not er.complete or er.rows_computed != n:
            raise RuntimeError(f"extract() did not finish: {er.summary()}")
        return {"c_per_s": n / wall, "c_loop_per_s": n / er.seconds if er.seconds else None,
                "cpu_ms_per_sample": 1e3 * cpu / n, "kib_per_row": er.bytes_per_row / 1024}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def section_extract(ctx: Context, rep: Report) -> None:
    p = ctx.profile
    t0 = time.perf_counter()
    sec = rep.section("extract", "1. extraction: (b) bare batched forward vs (c) extract() end to end", [
        f"{len(ctx.manifest)} rows of {rep.data['data'].get('source')}; (b) inputs decoded and tokenised beforehand "
        f"and already on the device, best of {p.bare_repeats}; (c) extract() with {c_workers(p)} decode workers"
        f"{' (its default)' if p.c_workers is None else ''} into a fresh folder, weights and their hash computed "
        "before the clock.",
        "worker rows: (c) for vit at the larger batch with W decode workers; 'fed' = the fewest workers whose "
        "(c) reaches 0.85 x (b)."])
    states: dict[str, dict] = {}  # encoder -> {"enc", "batches"}

    def ready(name: str, batch: int) -> dict | None:
        """The encoder on the device and (b)'s inputs, built once; None (and a row saying why) on failure."""
        if name not in states:
            state: dict = {}

            def setup():
                state["enc"] = encoder_on_device(ctx, name)
                state["batches"] = prepared_batches(ctx, state["enc"], batch)
                return {}

            row = rep.item(sec, f"extract {name}: build + decode", setup, encoder=name, batch=None, kind="setup")
            if row["status"] == "ok":
                sec["rows"].remove(row)  # a set-up row is kept only when it failed
            states[name] = state if row["status"] == "ok" else None
        return states[name]

    def b_vs_c(name: str, bs: int) -> None:
        state = ready(name, max(p.batch_sizes))
        if state is None:
            return

        def measure():
            b = bare_forward(state["enc"], split_batches(state["batches"], bs), ctx.device, p.bare_repeats)
            out = {"workers": c_workers(p), "b_per_s": b}
            try:  # a failing (c) keeps (b)
                c = end_to_end(ctx, state["enc"], bs, c_workers(p))
            except Exception as e:  # noqa: BLE001 - recorded in the row
                out["status"] = f"error in (c): {one_line(e)}"
                out["traceback"] = traceback.format_exc(limit=6)
                return out
            return {**out, **c, "c_over_b": c["c_per_s"] / b}

        rep.item(sec, f"extract {name} batch {bs}", measure, encoder=name, batch=bs, kind="b-vs-c")

    def worker_sweep(bs: int) -> None:
        state = ready("vit", bs)
        if state is None:
            return
        b_ref = next((r["b_per_s"] for r in sec["rows"] if r.get("encoder") == "vit" and r.get("batch") == bs
                      and r.get("b_per_s")), None)
        for w in [w for w in p.sweep_workers if w <= ctx.workers_max]:
            def sweep(w=w):
                c = end_to_end(ctx, state["enc"], bs, w)
                return {"workers": w, **c, "c_over_b": c["c_per_s"] / b_ref if b_ref else None}

            rep.item(sec, f"extract vit batch {bs} workers {w}", sweep, encoder="vit", batch=bs, kind="workers")
        swept = [r for r in sec["rows"] if r.get("kind") == "workers" and r.get("status") == "ok"]
        fed = [r["workers"] for r in swept if (r.get("c_over_b") or 0) >= 0.85]
        best = max(swept, key=lambda r: r["c_per_s"], default=None)
        sec["fed_workers"] = min(fed) if fed else None
        sec["notes"].append(
            f"decode workers that keep the GPU fed (vit, batch {bs}): {min(fed)}" if fed else
            "no worker count reached 0.85 x (b): decode-bound" + (
                f"; best {best['c_per_s']:.0f} samples/s with {best['workers']} workers" if best else ""))

    def release(name: str) -> None:
        states.pop(name, None)
        free_memory()

    # Most important first (vit, bert; then the worker sweep; then the other encoders), so that when the
    # section's time share runs out, what is skipped is what matters least.
    for name in EXTRACT_MAIN:
        for bs in p.batch_sizes:
            b_vs_c(name, bs)
    release("bert")
    worker_sweep(max(p.batch_sizes))
    release("vit")
    for name in EXTRACT_EXTRA:
        b_vs_c(name, max(p.batch_sizes))
        release(name)
    rep.close_section(sec, t0)
