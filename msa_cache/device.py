"""The one place that turns `--device` into a torch.device, for every command.

`auto` (and a bare `cuda`) take this process's own GPU: cuda:LOCAL_RANK under
torchrun, cuda:SLURM_LOCALID under srun with several tasks per node, else cuda:0;
CPU where torch sees no GPU. Without this, every rank of a torchrun launch would
pile onto cuda:0. A name torch cannot use here is a one-line user error before
any work starts, not a traceback mid-run.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import torch

_NAME = re.compile(r"^(auto|cpu|cuda|mps)(?::(\d+))?$")
_CHOICES = "use auto, cpu, cuda or cuda:N"


def _local_index(env: Mapping[str, str], count: int, name: str) -> int:
    """This process's GPU index on its node (0 outside torchrun / multi-task srun)."""
    if "LOCAL_RANK" in env:  # torchrun: one process per GPU, so a rank beyond the GPUs is a launch mistake
        local = _env_int(env, "LOCAL_RANK", name)
        if local >= count:
            raise ValueError(
                f"--device {name} (LOCAL_RANK={local} from torchrun, but torch sees {count} CUDA device(s) here): "
                f"start at most {count} process(es) per node (torchrun --nproc-per-node {count}) "
                f"or pass --device cuda:N")
        return local
    if "SLURM_LOCALID" in env:
        # srun binds GPUs per task (--gpus-per-task) or lets tasks share the node's; either way wrap around.
        return _env_int(env, "SLURM_LOCALID", name) % count
    return 0


def _env_int(env: Mapping[str, str], var: str, name: str) -> int:
    try:
        value = int(env[var])
    except ValueError:
        raise ValueError(f"--device {name} ({var}={env[var]!r} is not a whole number): "
                         f"fix or unset {var}, or pass --device cuda:N") from None
    if value < 0:
        raise ValueError(f"--device {name} ({var}={value} is negative): fix or unset {var}, or pass --device cuda:N")
    return value


def resolve_device(name: str = "auto", env: Mapping[str, str] | None = None) -> "torch.device":
    """`auto` | `cpu` | `cuda` | `cuda:N` | `mps` -> the torch.device this process should use.

    Raises ValueError (one line: what, where, what to do) for a malformed name, a GPU
    that is not there, or a torchrun LOCAL_RANK beyond the node's GPUs.
    """
    import torch  # here, not at the top: `--help` and the option checks of every command import this module

    env = os.environ if env is None else env
    text = str(name).strip().lower()
    m = _NAME.match(text)
    if m is None or (m.group(1) in ("auto", "cpu") and m.group(2) is not None):
        raise ValueError(f"--device {name} (not a device name): {_CHOICES}")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"--device {name} (no Apple MPS device visible to torch here): use --device auto or cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        if kind == "auto":
            return torch.device("cpu")
        raise ValueError(f"--device {name} (torch sees no CUDA GPU here: no GPU, a CPU-only torch build, "
                         f"or CUDA_VISIBLE_DEVICES is empty): use --device auto or cpu")
    count = torch.cuda.device_count()
    if index is None:  # auto or a bare cuda: this process's own GPU
        return torch.device("cuda", _local_index(env, count, name))
    if int(index) >= count:
        raise ValueError(f"--device {name} (torch sees {count} CUDA device(s) here: cuda:0..cuda:{count - 1}): "
                         f"pass one of those, cuda or auto")
    return torch.device("cuda", int(index))
