"""Which part of the work this process does: item k belongs to process k % N
(cache shards in `extract`, grid runs in `compare`).

N and i come from --num-shards/--shard-index, else from torchrun (WORLD_SIZE,
RANK) or a SLURM job array (SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_ID minus
SLURM_ARRAY_TASK_MIN), so independent processes fill one cache or one runs/
folder without a scheduler.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Partition:
    count: int = 1
    index: int = 0
    source: str = "single process"

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index


def resolve_partition(num_shards: int | None = None, shard_index: int | None = None,
                      env: Mapping[str, str] | None = None) -> Partition:
    env = os.environ if env is None else env
    if (num_shards is None) != (shard_index is None):
        raise ValueError("give both --num-shards and --shard-index, or neither")
    if num_shards is not None:
        part = Partition(int(num_shards), int(shard_index), "--num-shards/--shard-index")
    elif int(env.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in env:
        part = Partition(int(env["WORLD_SIZE"]), int(env["RANK"]), "torchrun RANK/WORLD_SIZE")
    elif "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
        part = Partition(int(env["SLURM_ARRAY_TASK_COUNT"]), int(env["SLURM_ARRAY_TASK_ID"]) - first,
                         "SLURM job array")
    else:
        return Partition()
    if part.count < 1 or not 0 <= part.index < part.count:
        raise ValueError(f"shard index {part.index} is outside 0..{part.count - 1} (from {part.source})")
    return part
