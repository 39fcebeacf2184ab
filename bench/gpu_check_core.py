"""bench/gpu_check.py's shared parts: the two profiles (GPU, CPU dry run), the time guard and watchdog, the
report that rewrites gpu_check.json / .md after every item, CUDA memory peaks and caps, the machine's
details and the context (models, data) every section reads."""
from __future__ import annotations

import contextlib
import copy
import datetime as dt
import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import gpu_check_world as world  # noqa: E402
from gpu_check_markdown import markdown  # noqa: E402

import torch  # noqa: E402

from msa_cache.extract import default_workers  # noqa: E402
from msa_cache.fit.trainer import PREDICT_BATCH  # noqa: E402
from msa_cache.heads import Batch  # noqa: E402

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
