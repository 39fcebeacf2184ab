"""All GPU evidence in one command (issue 19): extraction speed, head memory, fine-tune steps, OOM paths.

    bash bench/gpu_check.sh                      # on a CUDA machine; writes to $OUT (or --out DIR)
    python bench/gpu_check.py --cpu-dry-run      # the same code paths at tiny sizes on a CPU, < 1 min

Sections (each catches its own failures and records them in its table):
 1. extract   vit, bert (and resnet50, clip at the larger batch): (b) the bare batched forward
              (`Encoder.forward`, inputs already on the device, the autocast extract() uses) vs
              (c) `extract()` end to end (JPEG decode in DataLoader workers, fp16 autocast on CUDA,
              fp16 HDF5 writes, into a fresh folder), samples/s and c/b at two batch sizes; then
              (c) for vit with 1..16 decode workers: the fewest that keep the GPU fed.
 2. heads     every registered head at batch 64 on 768-d tokens (128 text + 197 image), at its
              default and at its paper width (MDSE 768; INFIG 768 with 3 fusion layers): peak CUDA
              memory of a fit step (the trainer's `train_step`: fp16 autocast + GradScaler + the
              head's optimizer) and of a predict step (at 64 and at the trainer's predict batch 256),
              seconds per fit step, and whether it runs on a 4 GiB card (GTX 980): run again under
              a memory cap (`torch.cuda.set_per_process_memory_fraction`) of 4 GiB minus 0.5 GiB
              for the CUDA context; where it does not, the largest batch that does, by binary
              search under the same cap.
 3. finetune  `late` and `infig` on BERT-base + ViT-B/16 sized encoders, both unfrozen (the
              fine-tune trainer's `backward_step` + `optimizer_step`): fp32, the AMP precision the
              GPU gets (bf16 on Ampere+), and fp16 + GradScaler (what a GTX 980 gets), each with
              gradient checkpointing off and on: peak memory and seconds per step.
 4. oom       the out-of-memory paths on purpose: extract() at a batch that does not fit under a
              cap (its batch-halving path), and a fine-tune step under the 4 GiB cap.
Output: gpu_check.json and gpu_check.md in --out (default $OUT, else /tmp/msa-bench/gpu-check/out),
rewritten after every item, with the GPU name, driver, torch / CUDA versions.

A time guard (--budget-s, default 420 s on a GPU) gives each section a share of what is left
(SECTION_SHARES, unused time passing on), skips an item with a note once its section's share or the
whole budget is spent, and a watchdog ends the process 30 s after the budget, with what was measured
written.

--cpu-dry-run: tiny random models (same classes), 32 rows, batch 8 heads on 32-d tokens, paper
width 64; no CUDA, so no CUDA memory (those cells are null) and the out-of-memory errors are
SIMULATED (a forward pre-hook raises the error CUDA raises) so the halving and binary-search code
runs. Its numbers only show that the script works.

Files: this one (options, the order of the sections and their time shares); gpu_check_core.py (profiles,
time guard, report, memory peaks and caps, machine, context); gpu_check_extract.py (1), gpu_check_heads.py
(2), gpu_check_finetune.py (3 and 4); gpu_check_markdown.py (gpu_check.md); gpu_check_world.py (the data,
tokenizer and model sizes).
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import gpu_check_world as world  # noqa: E402
from gpu_check_core import (DRY, GPU, Budget, Context, Profile, Report, free_memory, machine_info,  # noqa: E402
                            start_watchdog)
from gpu_check_extract import section_extract  # noqa: E402
from gpu_check_finetune import section_finetune, section_oom  # noqa: E402
from gpu_check_heads import section_heads  # noqa: E402
from gpu_check_markdown import markdown  # noqa: E402

import torch  # noqa: E402


SECTIONS = {"extract": section_extract, "heads": section_heads, "finetune": section_finetune, "oom": section_oom}
# Shares of the time left when a section starts (over the sections still to run), so a slow section cannot
# starve the later ones; expected on an H200: extract ~60-90 s, heads ~40-60 s, finetune ~40 s, oom ~10 s.
SECTION_SHARES = {"extract": 0.35, "heads": 0.3, "finetune": 0.25, "oom": 0.1}


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else common.SCRATCH / "gpu-check" / "out"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json / .md (default $OUT, else "
                                                           "/tmp/msa-bench/gpu-check/out)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU, < 1 min: checks the script")
    ap.add_argument("--data", default=None, help="auto (MVSA-Single where found, else generated; the default on a "
                                                 "GPU), generated (the dry run's default), or an MVSA-Single folder "
                                                 "in the CLMLF layout")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list out of {','.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=None, help="time guard (default 420 on a GPU, 55 dry run)")
    ap.add_argument("--rows", type=int, default=None, help="extraction rows (default 2048; dry run 32)")
    ap.add_argument("--card-gib", type=float, default=None, help="the small card whose fit is checked (default 4)")
    ap.add_argument("--context-gib", type=float, default=None,
                    help="of it, what the CUDA context and driver keep outside torch's allocator (default 0.5)")
    args = ap.parse_args(argv)

    profile = DRY if args.cpu_dry_run else GPU
    overrides = {k: v for k, v in (("budget_s", args.budget_s), ("rows", args.rows), ("card_gib", args.card_gib),
                                   ("context_gib", args.context_gib)) if v is not None}
    profile = Profile(**{**asdict(profile), **overrides})
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False): bench/gpu_check.py measures a GPU; "
              "run it with --cpu-dry-run to check the script on a CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    out = args.out or default_out()
    budget = Budget(profile.budget_s)
    rep = Report(out, profile, budget)
    start_watchdog(rep)
    rep.data["machine"] = machine_info()
    rep.write()
    print(f"gpu_check ({profile.name}): {rep.data['machine'].get('gpu') or 'CPU'}; writing {out}", flush=True)

    scratch = common.SCRATCH / "gpu-check"
    scratch.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    try:
        workers_max = os.cpu_count() or 1
        data = args.data or ("generated" if args.cpu_dry_run else "auto")
        manifest, data_info = world.prepare_manifest(scratch, profile.rows, data, threads=min(8, workers_max))
        rep.data["data"] = data_info
        tokenizer = world.build_tokenizer(run_dir / "tokenizer", list(manifest.column("text")))
        ctx = Context(profile, device, run_dir, manifest, tokenizer, workers_max,
                      0 if args.cpu_dry_run else workers_max)
        gc.freeze()  # the modules and data loaded so far live to the end: keep them out of every gc.collect()
        print(f"[{budget.elapsed():6.1f} s] data: {data_info}", flush=True)
        for i, name in enumerate(sections):
            share = SECTION_SHARES[name] / sum(SECTION_SHARES[s] for s in sections[i:])
            rep.section_end = budget.elapsed() + share * max(0.0, budget.left())
            if budget.left() < 5:
                rep.data["sections"][name] = {"title": name, "status": "skipped", "rows": [],
                                              "notes": [f"skipped: time budget ({profile.budget_s:.0f} s) spent"]}
                continue
            try:
                SECTIONS[name](ctx, rep)
            except Exception as e:  # noqa: BLE001 - a section's own set-up failed; the next section runs
                sec = rep.data["sections"].setdefault(name, {"title": name, "rows": [], "notes": []})
                sec["status"] = f"failed: {type(e).__name__}: {e}"
                sec["traceback"] = traceback.format_exc(limit=8)
                print(sec["traceback"], file=sys.stderr, flush=True)
            free_memory()
            rep.write()
    except Exception as e:  # noqa: BLE001 - data or tokenizer set-up: nothing can be measured
        rep.data["notes"].append(f"set-up failed: {type(e).__name__}: {e}")
        rep.data["setup_traceback"] = traceback.format_exc(limit=8)
        print(rep.data["setup_traceback"], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    rep.write()
    print()
    print(markdown(rep.data), flush=True)
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'} ({budget.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
