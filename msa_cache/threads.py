"""How many intra-op threads torch uses, decided per command from what it runs.

    small   pooled heads and small token heads: 1 thread. Their matmuls are tiny, so more
            threads only add overhead: on a machine with other work, torch's intra-op
            threads spin-wait for busy cores (a pooled fit measured 3x slower with the default).
    large   extraction, fine-tuning, large token heads (catalog `compute="large"`): the cores
            this process may run on (`os.sched_getaffinity`), at most MAX_THREADS.

`--threads N` on the commands that compute overrides the choice. Where the user set
OMP_NUM_THREADS or MKL_NUM_THREADS (and gave no --threads), torch is left as it is. The count
changes speed, never results, so it is not part of a run's identity.
"""
from __future__ import annotations

import os
from typing import Mapping

MAX_THREADS = 8  # past this, intra-op threads rarely pay for their coordination on these models
USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
WORK = ("small", "large")

_requested: int | None = None  # this process's --threads


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a SLURM or taskset mask), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def decide(work: str, requested: int | None = None, env: Mapping[str, str] | None = None,
           cores: int | None = None) -> int | None:
    """The thread count for `work` ("small" | "large"), or None: leave torch as the user's variables set it."""
    if work not in WORK:
        raise ValueError(f"work {work!r}: choose one of {WORK}")
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads {requested}: give 1 or more")
        return requested
    env = os.environ if env is None else env
    if any(str(env.get(name, "")).strip() for name in USER_VARIABLES):
        return None
    if work == "small":
        return 1
    return max(1, min(MAX_THREADS, cores if cores is not None else available_cores()))


def request(threads: int | None) -> None:
    """Record the command's --threads (None: the policy decides) for every later `use` in this process."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: give 1 or more")
    global _requested
    _requested = threads


def use(work: str) -> int | None:
    """Set torch's intra-op threads for `work` (see `decide`); the count set, or None where left alone."""
    n = decide(work, _requested)
    if n is not None:
        import torch  # here: deciding needs no torch, and the CLI's option checks import this module

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return n
