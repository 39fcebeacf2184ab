"""Shared helpers of the benchmarks: the machine and its load, timing, peak memory
measured in a subprocess per measurement, Markdown tables, scratch manifests.

Every benchmark prints the machine (CPU model, cores, RAM, torch threads) and the
load average next to its results: this project's numbers were taken on a shared
2-core machine, so the load is part of the result.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
SCRATCH = Path(os.environ.get("MSA_BENCH_DIR", "/tmp/msa-bench"))
MVSA_MANIFEST = REPO / "manifests" / "mvsa-single.parquet"
RESULT_PREFIX = "BENCH-RESULT "

# Never touch a model hub: the offline encoders load from pip packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# -- the machine -------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": round(ram_gib(), 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "nice": os.nice(0), "load": load_average()}


def print_machine(title: str) -> dict:
    m = machine()
    print(f"## {title}")
    print(f"machine: {m['cpu']}, {m['cores']} cores (nproc), {m['ram_gib']} GiB RAM, GPU: {m['gpu']}; "
          f"torch {m['torch']} with {m['torch_threads']} threads; nice {m['nice']}")
    print(f"load average (1/5/15 min) at start: {m['load']}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    sys.stdout.flush()
    return m


def print_load(label: str = "at end") -> None:
    print(f"load average (1/5/15 min) {label}: {load_average()}")


# -- timing and memory -------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its reaped children (DataLoader workers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed_run(argv: list[str], env: dict | None = None, expect: str | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of `argv` run once in a fresh process (its CPU: the children's rusage); a failing
    command, or one whose stdout lacks `expect`, stops the bench with its output's tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or (expect is not None and expect not in proc.stdout):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@contextmanager
def timer(out: dict, key: str, cpu: dict | None = None):
    """`with timer(t, "x"): ...` adds the elapsed wall seconds to t["x"] (and CPU seconds to cpu["x"])."""
    t0, c0 = time.perf_counter(), cpu_seconds() if cpu is not None else 0.0
    try:
        yield
    finally:
        out[key] = out.get(key, 0.0) + time.perf_counter() - t0
        if cpu is not None:
            cpu[key] = cpu.get(key, 0.0) + cpu_seconds() - c0


def set_threads(n: int | None) -> None:
    """torch intra-op threads (None or 0: torch's default, one per core)."""
    import torch

    if n:
        torch.set_num_threads(n)


def _proc_status_mib(key: str) -> float | None:
    """A kB line of /proc/self/status (e.g. "VmHWM") in MiB; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM), MiB."""
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mib() -> float:
    """This process's current resident set size (VmRSS), MiB."""
    rss = _proc_status_mib("VmRSS")
    return rss if rss is not None else float("nan")


def child_result(result: dict) -> None:
    """Called at the end of a child measurement: print its result (with the peak RSS) for the parent."""
    result = {**result, "peak_rss_mib": peak_rss_mib()}
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(script: str | Path, job: dict, timeout: float | None = None) -> dict:
    """Run `python script --child JSON` in a fresh process (so peak memory of one measurement
    never mixes with another's) and return the dict it passed to `child_result`."""
    cmd = [sys.executable, str(script), "--child", json.dumps(job)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                          cwd=str(REPO))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {job} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


# -- output ------------------------------------------------------------------------------
def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        if x != x:
            return "n/a"
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (what bench/README.md holds)."""
    cells = [[fmt(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(table(header, rows))
    sys.stdout.flush()


# -- data --------------------------------------------------------------------------------
def head_of_manifest(source: Path, rows: int, out: Path, split: str | None = None):
    """The first `rows` rows of a manifest (of one split, if given) as a new manifest file under `out`
    (its file name names the cache folder), keeping the dataset root so images resolve."""
    import numpy as np

    from msa_cache.manifest import read_manifest, write_manifest

    man = read_manifest(source)
    table = man.table
    if split is not None:
        keep = np.flatnonzero(np.array(man.column("split")) == split)
        table = table.take(keep)
    if rows > table.num_rows:
        raise SystemExit(f"--rows {rows}: {source} has only {table.num_rows} rows{f' in {split}' if split else ''}")
    path = write_manifest(table.slice(0, rows), man.meta, out / f"{source.stem}-head{rows}.parquet")
    return read_manifest(path)


def check_disk(path: Path, need_bytes: float) -> tuple[bool, float]:
    """Whether `path`'s file system has `need_bytes` free (plus 2 GB slack); returns (ok, free bytes)."""
    import shutil

    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    return free > need_bytes + 2e9, free
