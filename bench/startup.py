"""Start-up cost of the commands that need no model, against `python -c "import torch"` in the same run.

    python bench/startup.py [--world /work/behave/world] [--repeats 5]

Times, each in a fresh interpreter and repeated round-robin (so a burst of load hits every
command alike): `msa-cache --help`, `msa-cache manifest info M`, `msa-cache cache info C`,
`python -c "import torch"`, `python -c "import pyarrow.parquet, h5py"` (the file readers: the
floor of any command that reads a manifest or a cache) and `python -c pass` (the interpreter alone).
Prints the median wall and CPU seconds of each and its ratio to importing torch; target <= 0.15x
(the commands import no torch at all). The world: a manifest under manifests/ and its caches under cache/ (the demo world).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from common import print_load, print_machine, print_table, timed_run

TARGET = 0.15
CLI = [sys.executable, "-m", "msa_cache_cli.main"]


def commands(world: Path) -> dict[str, list[str]]:
    manifest = max((world / "manifests").glob("*.parquet"), key=lambda p: p.stat().st_size)  # the main one
    return {
        "msa-cache --help": [*CLI, "--help"],
        f"msa-cache manifest info {manifest.name}": [*CLI, "manifest", "info", str(manifest)],
        "msa-cache cache info CACHE": [*CLI, "cache", "info", str(world / "cache")],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        # The floor of any command that reads a manifest (Parquet) and a cache (HDF5): their readers.
        'python -c "import pyarrow.parquet, h5py"': [sys.executable, "-c", "import pyarrow.parquet, h5py"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=Path("/work/behave/world"),
                    help="folder with manifests/*.parquet and cache/ [default: %(default)s]")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each command [default: %(default)s]")
    args = ap.parse_args()
    if not (args.world / "cache").is_dir() or not list((args.world / "manifests").glob("*.parquet")):
        raise SystemExit(f"{args.world}: expected manifests/*.parquet and cache/ (a demo world)")
    print_machine("startup: commands that need no model vs importing torch")
    cmds = commands(args.world)
    walls = {name: [] for name in cmds}
    cpus = {name: [] for name in cmds}
    for _ in range(args.repeats):
        for name, argv in cmds.items():
            wall, cpu = timed_run(argv)
            walls[name].append(wall)
            cpus[name].append(cpu)
    torch_name = 'python -c "import torch"'
    base_wall, base_cpu = statistics.median(walls[torch_name]), statistics.median(cpus[torch_name])
    rows = []
    for name in cmds:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        ratio = wall / base_wall
        verdict = "" if name.startswith("python") else ("met" if ratio <= TARGET else "missed")
        rows.append([name, wall, cpu, ratio, cpu / base_cpu, verdict])
    print(f"\nmedian of {args.repeats} runs each, round-robin; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}")
    print_table(["command", "wall s", "CPU s", "wall / import torch", "CPU / import torch",
                 f"<= {TARGET}x"], rows)
    print_load()


if __name__ == "__main__":
    main()
