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
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import gpu_check_world as world  # noqa: E402

import torch  # noqa: E402

# -- the project's code paths this script drives: all imports from msa_cache in one place, so a redesign of
# the trainer (whose private helpers the fit step uses, as bench/gpu_memory.py does) changes only this block.
from msa_cache.extract import default_workers, extract  # noqa: E402
from msa_cache.extract.dataset import RowDataset  # noqa: E402
from msa_cache.extract.runner import AUTOCAST, BatchRunner, is_oom, resolve_autocast  # noqa: E402
from msa_cache.finetune import FinetuneModel  # noqa: E402
from msa_cache.finetune.data import PostCollator, PostDataset, make_loader  # noqa: E402
from msa_cache.finetune.optim import grad_scaler, make_optimizer, resolve_precision  # noqa: E402
from msa_cache.finetune.train import backward_step, optimizer_step  # noqa: E402
from msa_cache.heads import HEADS, Batch, ModalityInput, ModalitySpec, create_head  # noqa: E402
from msa_cache.fit.config import RunSpec, TrainConfig  # noqa: E402
from msa_cache.fit.trainer import PREDICT_BATCH, train_step  # noqa: E402
from msa_cache.fit.trainer import make_optimizer as make_fit_optimizer  # noqa: E402
from msa_cache.train.loop import amp_autocast  # noqa: E402
from msa_cache.train.loop import grad_scaler as fit_grad_scaler  # noqa: E402

GIB = 2**30
CLASSES = 3
EXTRACT_MAIN = ("vit", "bert")  # both batch sizes
EXTRACT_EXTRA = ("resnet50", "clip")  # the larger batch only
FINETUNE_HEADS = ("late", "infig")
PAPER = {"mdse": {"width": None}, "infig": {"width": None, "fusion_layers": 3}}  # width: the profile's paper width


@dataclass(frozen=True)
class Profile:
    name: str
    models: str  # world sizes: base | tiny
    rows: int
    batch_sizes: tuple[int, ...]
    sweep_workers: tuple[int, ...]
    bare_repeats: int
    head_batch: int
    predict_batch: int
    dim: int
    text_tokens: int
    image_tokens: int
    paper_width: int
    fit_steps: int
    ft_batch: int
    ft_steps: int
    oom_request: int  # extract batch asked for under the halving cap
    c_workers: int | None  # decode workers of (c); None = extract()'s default
    budget_s: float
    card_gib: float = 4.0
    context_gib: float = 0.5  # CUDA context + what the driver keeps, outside torch's allocator
    # dry run only: a simulated card on which batch x parameters must stay below this
    sim_units: float = 0.0


GPU = Profile("gpu", "base", rows=2048, batch_sizes=(64, 256), sweep_workers=(1, 2, 4, 8, 16), bare_repeats=3,
              head_batch=64, predict_batch=PREDICT_BATCH, dim=768, text_tokens=128, image_tokens=197,
              paper_width=768, fit_steps=5, ft_batch=16, ft_steps=3, oom_request=512, c_workers=None,
              budget_s=420)
DRY = Profile("cpu-dry-run", "tiny", rows=32, batch_sizes=(4, 16), sweep_workers=(0, 1), bare_repeats=1,
              head_batch=8, predict_batch=16, dim=32, text_tokens=16, image_tokens=10, paper_width=64,
              fit_steps=2, ft_batch=4, ft_steps=1, oom_request=8, c_workers=0, budget_s=55, sim_units=2e7)


# -- time guard, results, output ----------------------------------------------------------
class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def finite_or_none(x):
    """JSON has no NaN/inf: such values become null (and are reported as n/a)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    return x


def one_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit] if text else ''}"


class Report:
    """Every item's result, written as JSON + Markdown after each item (a kill loses at most one)."""

    def __init__(self, out: Path, profile: Profile, budget: Budget):
        self.out, self.profile, self.budget = out, profile, budget
        self.section_end = math.inf  # budget.elapsed() at which the running section's share is spent
        self.lock = threading.RLock()
        self.data: dict = {"tool": "bench/gpu_check.py", "mode": profile.name, "budget_s": profile.budget_s,
                           "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "machine": {}, "data": {}, "profile": asdict(profile), "sections": {}, "notes": []}
        self.current = ""

    def section(self, name: str, title: str, notes: list[str]) -> dict:
        with self.lock:
            sec = {"title": title, "status": "running", "notes": list(notes), "rows": []}
            self.data["sections"][name] = sec
            return sec

    def item(self, sec: dict, label: str, fn, reserve_s: float = 5.0, **keys) -> dict:
        """Run fn() -> dict as one table row; a failure or an exhausted budget becomes the row's status."""
        row = dict(keys)
        if self.budget.left() < reserve_s:
            row["status"] = f"skipped: time budget ({self.profile.budget_s:.0f} s) spent"
        elif self.budget.elapsed() > self.section_end:
            row["status"] = f"skipped: this section's share of the time budget spent (at {self.section_end:.0f} s)"
        else:
            self.current = label
            t0 = time.perf_counter()
            print(f"[{self.budget.elapsed():6.1f} s] {label} ...", flush=True)
            try:
                row.update(fn())
                row.setdefault("status", "ok")
            except Exception as e:  # noqa: BLE001 - recorded in the table, the next item runs
                row["status"] = f"error: {one_line(e)}"
                row["traceback"] = traceback.format_exc(limit=6)
                print(row["traceback"], file=sys.stderr, flush=True)
            row["seconds"] = round(time.perf_counter() - t0, 2)
            free_memory()
        with self.lock:
            sec["rows"].append(row)
            self.write()
        return row

    def close_section(self, sec: dict, t0: float) -> None:
        statuses = [r.get("status", "") for r in sec["rows"]]
        sec["status"] = ("ok" if all(s == "ok" for s in statuses) else
                         "skipped" if statuses and all(s.startswith("skipped") for s in statuses) else "partial")
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        self.write()

    def write(self) -> None:
        with self.lock:
            self.data["wall_s"] = round(self.budget.elapsed(), 1)
            self.out.mkdir(parents=True, exist_ok=True)
            payload = json.dumps(finite_or_none(self.data), indent=1, allow_nan=False, default=str)
            for name, text in (("gpu_check.json", payload), ("gpu_check.md", markdown(self.data))):
                tmp = self.out / f".{name}.tmp"
                tmp.write_text(text)
                os.replace(tmp, self.out / name)


def start_watchdog(report: Report, grace_s: float = 30.0) -> None:
    """End the process grace_s after the budget (an item that hangs), keeping what was measured."""

    def watch():
        while report.budget.left() > -grace_s:
            time.sleep(1.0)
        if report.lock.acquire(timeout=10):
            report.data["notes"].append(f"stopped by the watchdog {grace_s:.0f} s after the time budget, "
                                        f"during: {report.current}")
            report.write()
        print(f"gpu_check: watchdog stop during {report.current}", file=sys.stderr, flush=True)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


# -- devices and memory --------------------------------------------------------------------
def free_memory() -> None:
    if not torch.cuda.is_available():
        return  # CPU tensors go with their last reference
    gc.collect()  # cycles (an out-of-memory traceback's frames) can hold CUDA tensors
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Peak:
    """Peak CUDA memory (allocated and reserved) above what was allocated when the block started; None on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = self.base_reserved = 0
        self.allocated: float | None = None
        self.reserved: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            free_memory()
            torch.cuda.reset_peak_memory_stats()
            self.base, self.base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.allocated = (torch.cuda.max_memory_allocated() - self.base) / GIB
            self.reserved = (torch.cuda.max_memory_reserved() - self.base_reserved) / GIB
        return False


def _batch_size_of(args, kwargs) -> int:
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, Batch):
            return v.size
        if torch.is_tensor(v) and v.ndim > 0:
            return int(v.shape[0])
        if isinstance(v, dict):
            return _batch_size_of((), v)
    return 0


@contextlib.contextmanager
def memory_cap(device: torch.device, cap_bytes: float, module: torch.nn.Module | None = None,
               sim_max_batch: int | None = None):
    """CUDA: at most cap_bytes more than is reserved now (set_per_process_memory_fraction).
    CPU dry run: a SIMULATED cap, a forward pre-hook on `module` raising CUDA's out-of-memory
    message for batches above sim_max_batch."""
    if device.type == "cuda":
        free_memory()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved() + cap_bytes) / total))
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            free_memory()
        return
    handle = None
    if module is not None and sim_max_batch is not None:
        def hook(_module, args, kwargs):
            n = _batch_size_of(args, kwargs)
            if n > sim_max_batch:
                raise RuntimeError(f"CUDA out of memory (SIMULATED by --cpu-dry-run: batch {n} > {sim_max_batch})")
        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def c_workers(profile: Profile) -> int:
    return default_workers() if profile.c_workers is None else profile.c_workers


def cap_bytes(profile: Profile) -> float:
    return (profile.card_gib - profile.context_gib) * GIB


def sim_max_batch(profile: Profile, params: int) -> int:
    return max(0, int(profile.sim_units // max(params, 1)))


def timed_steps(fn, n_warm: int, n: int, device: torch.device) -> list[float]:
    out = []
    for i in range(n_warm + n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i >= n_warm:
            out.append(time.perf_counter() - t0)
    return out


# -- machine ---------------------------------------------------------------------------------
def machine_info() -> dict:
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "transformers": transformers.__version__, "cpu": common.cpu_model(), "cpu_count": os.cpu_count(),
            "ram_gib": round(common.ram_gib(), 1), "torch_threads": torch.get_num_threads(),
            "load_average": common.load_average()}
    try:
        info["dev_shm_free_gib"] = round(shutil.disk_usage("/dev/shm").free / GIB, 1)  # DataLoader workers use it
    except OSError:
        info["dev_shm_free_gib"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update({"gpu": p.name, "gpu_memory_gib": round(p.total_memory / GIB, 1),
                     "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            info["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info.update({"gpu": None, "driver": None})
    return info


# -- context shared by the sections ------------------------------------------------------------
@dataclass
class Context:
    profile: Profile
    device: torch.device
    scratch: Path
    manifest: object
    tokenizer: object
    workers_max: int  # CPU cores: the most decode workers tried
    prep_workers: int  # DataLoader workers that prepare the untimed inputs
    models: dict = field(default_factory=dict)  # name -> CPU model, built once


def cpu_model(ctx: Context, name: str):
    if name not in ctx.models:
        ctx.models[name] = world.build_model(name, ctx.profile.models, ctx.tokenizer)
    return ctx.models[name]


def encoder_on_device(ctx: Context, name: str):
    """A registry encoder around a copy of the random model, on the device, its weights hash computed
    (extract() records it; computing it here keeps it out of the clocks, like loading the weights)."""
    enc = world.build_encoder_for(name, ctx.profile.models, ctx.tokenizer, copy.deepcopy(cpu_model(ctx, name)))
    enc.to(ctx.device)
    _ = enc.weights_sha256
    enc.field_shapes()
    return enc


# -- 1. extraction ---------------------------------------------------------------------------
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


# -- 2. heads at 768-d tokens ------------------------------------------------------------------
def head_spec(p: Profile) -> dict:
    return {"text": ModalitySpec(p.dim, p.dim, p.text_tokens), "image": ModalitySpec(p.dim, p.dim, p.image_tokens)}


def make_batch(p: Profile, n: int, device: torch.device, seed: int = 0) -> Batch:
    """As bench/gpu_memory.py: float32 like the cache reader gives, text with 8..L real tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(8, p.text_tokens), p.text_tokens + 1, (n,), generator=g)
    mask = torch.arange(p.text_tokens)[None, :] < lengths[:, None]
    text = ModalityInput(torch.randn(n, p.dim, generator=g),
                         torch.randn(n, p.text_tokens, p.dim, generator=g) * mask[..., None], mask)
    image = ModalityInput(torch.randn(n, p.dim, generator=g), torch.randn(n, p.image_tokens, p.dim, generator=g))
    return Batch({"text": text, "image": image}, torch.randint(0, CLASSES, (n,), generator=g), {},
                 [str(i) for i in range(n)]).to(device)


def trainer_step_fn(head, batch: Batch, device: torch.device):
    """The trainer's fit step: its optimizer, its GradScaler, AMP on CUDA (TrainConfig's default)."""
    optimizer = make_fit_optimizer(head, RunSpec("", {}, head.name, {}, TrainConfig(), 0))
    use_amp = device.type == "cuda" and TrainConfig().amp
    scaler = fit_grad_scaler(use_amp)
    head.train()
    return lambda: train_step(head, batch, optimizer, scaler, device, use_amp)


def predict_step(head, batch: Batch, device: torch.device) -> None:
    """As the trainer's predict_probs does it for one batch."""
    head.eval()
    with torch.no_grad(), amp_autocast(device, device.type == "cuda" and TrainConfig().amp), head.logits_only():
        torch.softmax(head(batch).logits.float(), dim=-1).cpu()


def closed_form(name: str) -> bool:
    return HEADS[name].fit_mode == "closed_form"


def run_head(p: Profile, name: str, options: dict, n: int, device: torch.device, steps: int, predict_n: int):
    """Build, fit steps, predict at n and predict_n: {peaks, step times, params}. OOM propagates."""
    out: dict = {}
    with Peak(device) as fit_peak:
        head = create_head(name, head_spec(p), CLASSES, options).to(device)
        out["params"] = sum(q.numel() for q in head.parameters())
        batch = make_batch(p, n, device)
        if not closed_form(name):
            times = timed_steps(trainer_step_fn(head, batch, device), 2, steps, device)
            out["fit_s_per_step"] = statistics.median(times) if times else None
    if not closed_form(name):
        out["fit_gib"], out["fit_reserved_gib"] = fit_peak.allocated, fit_peak.reserved
    head.zero_grad(set_to_none=True)
    for key, size in (("predict_gib", n), ("predict_big_gib", predict_n)):
        with Peak(device) as pk:
            b = batch if size == n else make_batch(p, size, device, seed=1)
            predict_step(head, b, device)
            b = None
        out[key] = pk.allocated
    return head, out


def fits_under_cap(p: Profile, name: str, options: dict, n: int, device: torch.device, params: int) -> tuple[bool, str]:
    """Whether build + 2 fit steps + predict at n run under the small-card cap."""
    probe = create_head(name, head_spec(p), CLASSES, options) if device.type == "cpu" else None
    try:
        with memory_cap(device, cap_bytes(p), probe, sim_max_batch(p, params)):
            if probe is not None:  # dry run: the simulated cap hooks the head that runs
                head = probe
                batch = make_batch(p, n, device)
                if not closed_form(name):
                    trainer_step_fn(head, batch, device)()
                predict_step(head, batch, device)
            else:
                run_head(p, name, options, n, device, 0, n)
        return True, ""
    except RuntimeError as e:
        if not is_oom(e):
            raise
        return False, str(e).splitlines()[0][:120]
    finally:
        free_memory()


def largest_fitting_batch(p: Profile, name: str, options: dict, device: torch.device, params: int, hi: int) -> int:
    """Binary search in [1, hi) under the cap (hi does not fit); 0 when even batch 1 does not."""
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, _ = fits_under_cap(p, name, options, mid, device, params)
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo


def head_configs(p: Profile) -> list[tuple[str, str, dict]]:
    out = []
    for name in sorted(HEADS):
        out.append((name, "default", {}))
        if name in PAPER:
            opts = {k: (p.paper_width if v is None else v) for k, v in PAPER[name].items()}
            out.append((name, "paper: " + ", ".join(f"{k} {v}" for k, v in opts.items()), opts))
    return out


def section_heads(ctx: Context, rep: Report) -> None:
    p, device = ctx.profile, ctx.device
    t0 = time.perf_counter()
    cap = cap_bytes(p) / GIB
    sec = rep.section("heads", f"2. heads: batch {p.head_batch}, {p.dim}-d tokens ({p.text_tokens} text + "
                               f"{p.image_tokens} image)", [
        "fit = the trainer's train_step (fp16 autocast + GradScaler on CUDA, the head's optimizer), peak over "
        f"building the head and inputs, 2 warm-up and {p.fit_steps} timed steps (median s/step); predict = eval, "
        f"no_grad, autocast, logits_only, at {p.head_batch} and at the trainer's predict batch {p.predict_batch}. "
        "GiB = torch.cuda.max_memory_allocated above what was allocated before (weights, inputs, optimizer "
        "state, activations; the CUDA context comes on top).",
        f"fits {p.card_gib:g} GiB = build + 2 fit steps + predict at batch {p.head_batch} run again under "
        f"torch.cuda.set_per_process_memory_fraction capping the allocator at {cap:g} GiB ({p.card_gib:g} GiB "
        f"card minus {p.context_gib:g} GiB for the CUDA context); 'largest batch' = binary search under the same "
        f"cap (not a scaling estimate: INFIG's HFAM grows with batch squared). predict {p.predict_batch} under "
        "the cap is checked separately.",
        "probe is fitted in closed form on the CPU (sklearn): no fit step on the GPU."])
    if device.type == "cpu":
        sec["notes"].append("CPU dry run: no CUDA memory (GiB cells n/a); the cap is SIMULATED: batch x "
                            f"parameters <= {p.sim_units:g}.")
    for name, config, options in head_configs(p):
        def measure(name=name, options=options):
            head, out = run_head(p, name, options, p.head_batch, device, p.fit_steps, p.predict_batch)
            del head
            free_memory()
            ok, why = fits_under_cap(p, name, options, p.head_batch, device, out["params"])
            out["fits_card"] = ok
            try:  # a failure here keeps the measurements above
                if not ok:
                    out["oom"] = why
                    out["largest_batch"] = largest_fitting_batch(p, name, options, device, out["params"],
                                                                 p.head_batch)
                out["predict_big_fits_card"] = predict_fits(p, name, options, device, out["params"])
            except Exception as e:  # noqa: BLE001 - e.g. a loss undefined at batch 1
                out["status"] = f"error under the cap: {one_line(e)}"
            return out

        rep.item(sec, f"head {name} ({config})", measure, head=name, config=config)
    rep.close_section(sec, t0)


def predict_fits(p: Profile, name: str, options: dict, device: torch.device, params: int) -> bool:
    """Whether the head's weights + a predict step at the trainer's batch run under the card cap."""
    head = create_head(name, head_spec(p), CLASSES, options)
    try:
        with memory_cap(device, cap_bytes(p), head, sim_max_batch(p, params)):
            head.to(device)  # under the cap: the card holds the weights too
            predict_step(head, make_batch(p, p.predict_batch, device, seed=1), device)
        return True
    except RuntimeError as e:
        if not is_oom(e):
            raise
        return False
    finally:
        del head
        free_memory()


# -- 3. fine-tune steps ------------------------------------------------------------------------
def finetune_model(ctx: Context, head: str, checkpointing: bool):
    """BERT + ViT (fresh copies of the random models) and the head, both encoders unfrozen."""
    encoders = {"text": world.build_encoder_for("bert", ctx.profile.models, ctx.tokenizer,
                                                copy.deepcopy(cpu_model(ctx, "bert"))),
                "image": world.build_encoder_for("vit", ctx.profile.models, ctx.tokenizer,
                                                 copy.deepcopy(cpu_model(ctx, "vit")))}
    model = FinetuneModel(encoders, head, CLASSES, {}, "cls")
    model.set_trainable(["text", "image"])
    model.train()
    unsupported = model.enable_grad_checkpointing() if checkpointing else []
    return model, unsupported


def finetune_batches(ctx: Context, model, n_batches: int) -> list[dict]:
    """Training batches (augmentation on) from the fine-tune trainer's dataset, collator and loader."""
    specs = model.input_specs()
    rows = list(range(min(len(ctx.manifest), n_batches * ctx.profile.ft_batch)))
    ds = PostDataset(ctx.manifest, rows, specs, train=True, augment=True)
    loader = make_loader(ds, PostCollator(specs, model.pad_to_max), ctx.profile.ft_batch, shuffle=False,
                         workers=min(4, ctx.prep_workers))
    return list(loader)


def finetune_step_fn(model, batches: list[dict], device: torch.device, precision: str):
    optimizer, _ = make_optimizer(model, 1e-3, 2e-5, 0.01, total_steps=100, warmup=0.1, encoder_start=0)
    scaler = grad_scaler(precision)
    it = iter(range(10**9))

    def step():
        batch = batches[next(it) % len(batches)]
        backward_step(model, batch, None, device, precision, scaler)
        optimizer_step(model, optimizer, scaler)

    return step


def precisions(device: torch.device) -> list[str]:
    """fp32, what --amp picks on this device (bf16 on Ampere+), and fp16 + GradScaler (a GTX 980's)."""
    return list(dict.fromkeys(["fp32", resolve_precision(device, True), "fp16"]))


def section_finetune(ctx: Context, rep: Report) -> None:
    p, device = ctx.profile, ctx.device
    t0 = time.perf_counter()
    sizes = "BERT-base + ViT-B/16 sized" if p.models == "base" else "tiny BERT + tiny ViT"
    sec = rep.section("finetune", f"3. fine-tune steps: {sizes} encoders unfrozen, batch {p.ft_batch}", [
        "one step = the fine-tune trainer's backward_step + optimizer_step (autocast at the precision, "
        "GradScaler for fp16, grad clipping, AdamW with head and encoder groups) on batches from its own "
        "dataset and collator (augmentation on), collated before the clock; 1 warm-up step, median of "
        f"{p.ft_steps}. GiB = peak allocated above what was allocated before the model was built (weights, "
        "gradients, AdamW state, activations).",
        f"precisions: fp32; '{resolve_precision(device, True)}' = what --amp picks here; fp16 + GradScaler = "
        "what --amp picks on a GPU without native bf16 (GTX 980).",
        f"fits {p.card_gib:g} GiB: peak reserved <= {cap_bytes(p) / GIB:g} GiB (card minus CUDA context)."])
    if device.type == "cpu":
        sec["notes"].append(f"CPU dry run: no CUDA memory (GiB cells n/a); fp16 for {FINETUNE_HEADS[0]} only (CPU "
                            "fp16 matmuls are emulated, slow), and the GradScaler disables itself without CUDA.")
    for head in FINETUNE_HEADS:
        cache: dict = {}
        for precision in precisions(device):
            if device.type == "cpu" and precision == "fp16" and head != FINETUNE_HEADS[0]:
                continue  # CPU fp16 matmuls are emulated (slow); the first head runs this code path
            for ckpt in (False, True):
                def measure(head=head, precision=precision, ckpt=ckpt, cache=cache):
                    with Peak(device) as pk:
                        model, unsupported = finetune_model(ctx, head, ckpt)
                        if "batches" not in cache:
                            cache["batches"] = finetune_batches(ctx, model, 1 + p.ft_steps)
                        model.to(device)
                        times = timed_steps(finetune_step_fn(model, cache["batches"], device, precision), 1,
                                            p.ft_steps, device)
                    out = {"s_per_step": statistics.median(times), "peak_gib": pk.allocated,
                           "reserved_gib": pk.reserved, "params": sum(q.numel() for q in model.parameters())}
                    if pk.reserved is not None:
                        out["fits_card"] = pk.reserved <= cap_bytes(p) / GIB
                    if unsupported:
                        out["note"] = f"no checkpointing for {', '.join(unsupported)}"
                    return out

                rep.item(sec, f"finetune {head} {precision} ckpt={'on' if ckpt else 'off'}", measure, head=head,
                         precision=precision, grad_checkpointing=ckpt, batch=p.ft_batch)
        cache.clear()
    rep.close_section(sec, t0)


# -- 4. out-of-memory paths on purpose --------------------------------------------------------
def section_oom(ctx: Context, rep: Report) -> None:
    p, device = ctx.profile, ctx.device
    t0 = time.perf_counter()
    sec = rep.section("oom", "4. out-of-memory paths, triggered on purpose", [
        f"extract(): vit asked for batch {p.oom_request} under a cap of 2.5 x the activation memory of batch "
        f"{p.oom_request // 8} (measured first with extract()'s BatchRunner): its runner must halve the batch "
        "(logging each halving) and still write every row.",
        f"fine-tune: late, fp16 + GradScaler, gradient checkpointing on (the thriftiest GTX 980 setting), batch "
        f"{p.ft_batch}, under the {p.card_gib:g} GiB-card cap. The fine-tune trainer has no batch halving: an "
        "out-of-memory error ends the run (recorded, not raised)."])
    if device.type == "cpu":
        sec["notes"].append("CPU dry run: both out-of-memory errors are SIMULATED (forward pre-hook).")

    def halving():
        enc = encoder_on_device(ctx, "vit")
        small = p.oom_request // 8
        loader = torch.utils.data.DataLoader(RowDataset(ctx.manifest, enc.text, enc.image), batch_size=small,
                                             collate_fn=enc.collator())
        first = next(iter(loader))
        runner = BatchRunner(enc, device, "auto", "float16", small, log=lambda m: None)
        with Peak(device) as pk:
            runner(first)
        act = pk.allocated * GIB if pk.allocated is not None else 0.0
        cap = 2.5 * act
        log: list[str] = []
        with memory_cap(device, cap, enc.model, small * 2):
            c = end_to_end(ctx, enc, p.oom_request, c_workers(p), log)
        halvings = [m for m in log if "out of memory" in m]
        return {"requested_batch": p.oom_request, "cap_gib": cap / GIB if device.type == "cuda" else None,
                "halvings": halvings, "c_per_s": c["c_per_s"],
                "result": (f"halved {len(halvings)}x, all {len(ctx.manifest)} rows written" if halvings else
                           "NOT triggered: the cap was not reached"),
                **({} if halvings else {"status": "not triggered"})}

    rep.item(sec, "oom: extract() batch halving", halving, what="extract() batch halving")

    def finetune_capped():
        model, _ = finetune_model(ctx, "late", True)
        batches = finetune_batches(ctx, model, 2)
        capped = cap_bytes(p) / GIB if device.type == "cuda" else None
        try:
            with memory_cap(device, cap_bytes(p), model.head, p.ft_batch // 2):
                model.to(device)  # under the cap: the card holds the weights too
                timed_steps(finetune_step_fn(model, batches, device, "fp16"), 0, 2, device)
            return {"requested_batch": p.ft_batch, "cap_gib": capped, "result": "fits: 2 steps ran"}
        except RuntimeError as e:
            if not is_oom(e):
                raise
            return {"requested_batch": p.ft_batch, "cap_gib": capped,
                    "result": "out of memory: " + str(e).splitlines()[0][:100]}

    rep.item(sec, "oom: fine-tune under the card cap", finetune_capped, what="fine-tune step under the card cap")
    rep.close_section(sec, t0)


# -- Markdown --------------------------------------------------------------------------------
def _f(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return common.fmt(x, digits)
    return str(x)


def _status(r: dict) -> str:
    return r.get("status", "")


def markdown(data: dict) -> str:
    m = data.get("machine", {})
    lines = [f"# bench/gpu_check.py ({data['mode']})", "",
             f"started {data['started_utc']}, wall {data.get('wall_s', 0):.0f} s of a {data['budget_s']:.0f} s "
             f"budget; `{data['command']}`", "",
             f"GPU: **{m.get('gpu') or 'none (CPU)'}**, {m.get('gpu_memory_gib', 'n/a')} GiB, capability "
             f"{m.get('capability', 'n/a')}, driver {m.get('driver') or 'n/a'}; torch {m.get('torch')}, CUDA "
             f"{m.get('cuda') or 'n/a'}, cuDNN {m.get('cudnn') or 'n/a'}, transformers {m.get('transformers')}, "
             f"Python {m.get('python')}; CPU {m.get('cpu')} x {m.get('cpu_count')}, load {m.get('load_average')}, "
             f"/dev/shm free {m.get('dev_shm_free_gib')} GiB", "",
             f"data: {data.get('data', {}).get('source')} ({data.get('data', {}).get('rows')} rows)", ""]
    secs = data["sections"]
    fits = f"fits {data['profile']['card_gib']:g} GiB"
    if "extract" in secs:
        s = secs["extract"]
        lines += _section_head(s)
        main = [r for r in s["rows"] if r.get("kind") != "workers"]
        lines.append(common.table(
            ["encoder", "batch", "workers", "(b) bare forward /s", "(c) extract() /s", "(c) row loop /s", "c/b",
             "CPU ms/sample (c)", "KiB/row", "status"],
            [[r.get("encoder"), r.get("batch") or "", r.get("workers", ""), _f(r.get("b_per_s")),
              _f(r.get("c_per_s")), _f(r.get("c_loop_per_s")), _f(r.get("c_over_b")),
              _f(r.get("cpu_ms_per_sample")), _f(r.get("kib_per_row")), _status(r)] for r in main]))
        sweep = [r for r in s["rows"] if r.get("kind") == "workers"]
        if sweep:
            lines += ["", common.table(
                ["vit decode workers", "batch", "(c) extract() /s", "c/b", "CPU ms/sample", "status"],
                [[r.get("workers"), r.get("batch"), _f(r.get("c_per_s")), _f(r.get("c_over_b")),
                  _f(r.get("cpu_ms_per_sample")), _status(r)] for r in sweep])]
        lines.append("")
    if "heads" in secs:
        s = secs["heads"]
        lines += _section_head(s)
        lines.append(common.table(
            ["head", "config", "parameters", "fit GiB", "fit reserved GiB", "fit s/step", "predict GiB",
             "predict GiB (trainer batch)", fits, "largest batch that fits", "predict (trainer batch) fits",
             "status"],
            [[r.get("head"), r.get("config"), f"{r['params']:,}" if r.get("params") is not None else "n/a",
              "closed form" if r.get("head") == "probe" else _f(r.get("fit_gib")),
              "" if r.get("head") == "probe" else _f(r.get("fit_reserved_gib")),
              "" if r.get("head") == "probe" else _f(r.get("fit_s_per_step")),
              _f(r.get("predict_gib")), _f(r.get("predict_big_gib")), _f(r.get("fits_card")),
              "" if r.get("fits_card") else _f(r.get("largest_batch")), _f(r.get("predict_big_fits_card")),
              _status(r)] for r in s["rows"]]))
        lines.append("")
    if "finetune" in secs:
        s = secs["finetune"]
        lines += _section_head(s)
        lines.append(common.table(
            ["head", "precision", "grad checkpointing", "batch", "peak GiB", "reserved GiB", "s/step", fits,
             "status"],
            [[r.get("head"), r.get("precision"), "on" if r.get("grad_checkpointing") else "off", r.get("batch"),
              _f(r.get("peak_gib")), _f(r.get("reserved_gib")), _f(r.get("s_per_step")), _f(r.get("fits_card")),
              " ".join(x for x in (_status(r), r.get("note", "")) if x)] for r in s["rows"]]))
        lines.append("")
    if "oom" in secs:
        s = secs["oom"]
        lines += _section_head(s)
        lines.append(common.table(
            ["what", "requested batch", "cap GiB", "result", "logged", "status"],
            [[r.get("what"), r.get("requested_batch"), _f(r.get("cap_gib")), r.get("result", ""),
              "; ".join(r.get("halvings", [])), _status(r)] for r in s["rows"]]))
        lines.append("")
    if data.get("notes"):
        lines += ["## notes", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(lines) + "\n"


def _section_head(s: dict) -> list[str]:
    return [f"## {s['title']}", "", f"status: {s['status']}" + (f", {s['seconds']} s" if "seconds" in s else ""),
            ""] + [f"- {n}" for n in s["notes"]] + [""]


# -- main --------------------------------------------------------------------------------------
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
