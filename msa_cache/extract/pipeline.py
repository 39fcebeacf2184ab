"""The extraction stage: manifest rows -> encoder -> HDF5 shards (see msa_cache/cache/schema.py).

    from msa_cache.extract import extract
    report = extract("manifests/mvsa-single.parquet", ["minilm", "efficientnet-lite0"], out="cache")
    print(report.summary())

Per encoder: plan the folder (refusing a mismatched cache), take the locks of the
unfinished shards this process owns, then stream rows through a DataLoader
(workers decode images and tokenise), the model (inference mode, autocast on
CUDA) and a writer thread. Finished shards are skipped, so running the same
command again resumes.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from msa_cache.cache.schema import LOCK_SUFFIX
from msa_cache.device import resolve_device
from msa_cache.encoders import Encoder, build_encoder, check_encoder_name
from msa_cache.encoders.exported import text_options_mismatch
from msa_cache.encoders.hub import set_loading_bars
from msa_cache.extract.config import ExtractConfig, default_workers
from msa_cache.extract.dataset import RowDataset, ShardBatchSampler
from msa_cache.extract.lock import ShardLock
from msa_cache.extract.plan import CachePlan
from msa_cache.extract.precheck import refuse_early_all
from msa_cache.extract.runner import BatchRunner, resolve_autocast
from msa_cache.extract.shared import SharedRows, image_sources
from msa_cache.extract.writer import ShardFile, ShardWriter
from msa_cache.manifest.schema import Manifest, read_manifest
from msa_cache.partition import Partition, resolve_partition


MAX_LISTED = 50  # bad rows printed in a summary


def _log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


@dataclass
class BadRow:
    row: int
    id: str
    problem: str


@dataclass
class EncoderReport:
    encoder: str
    folder: Path
    rows: int
    shards_total: int
    shards_written: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)  # already complete
    shards_other: int = 0  # owned by other processes (--num-shards)
    complete: bool = False
    bad_rows: list[BadRow] = field(default_factory=list)
    rows_computed: int = 0  # rows written this run (computed or copied)
    rows_shared: int = 0  # of those, rows whose image features are a copy (same image as an earlier row)
    seconds: float = 0.0
    bytes_per_row: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows_computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        state = "complete" if self.complete else "incomplete (other shards belong to other processes or failed)"
        speed = (f"{self.rows_computed} rows in {self.seconds:.1f} s ({self.rows_per_s:.1f} samples/s)"
                 if self.rows_computed else "nothing to compute")
        if self.rows_shared:
            speed += (f"; {self.rows_computed - self.rows_shared} images encoded, {self.rows_shared} rows "
                      f"share one of them")
        lines = [f"{self.encoder}: {self.folder} {state}; wrote {len(self.shards_written)} shard(s), "
                 f"skipped {len(self.shards_skipped)} finished, {self.shards_other} for other processes; "
                 f"{speed}; {self.bytes_per_row / 1024:.1f} KiB/row"]
        if self.bad_rows:
            lines.append(f"  {len(self.bad_rows)} bad row(s) stored as zeros with ok=0:")
            lines += [f"    row {b.row} id {b.id}: {b.problem}" for b in self.bad_rows[:MAX_LISTED]]
            if len(self.bad_rows) > MAX_LISTED:
                lines.append(f"    ... {len(self.bad_rows) - MAX_LISTED} more (all in report.bad_rows and "
                             "`msa-cache cache info`)")
        return "\n".join(lines)


@dataclass
class ExtractReport:
    encoders: list[EncoderReport]

    @property
    def bad_rows(self) -> list[BadRow]:
        return [b for e in self.encoders for b in e.bad_rows]

    def summary(self) -> str:
        return "\n".join(e.summary() for e in self.encoders)


@dataclass(frozen=True)
class ExtractSettings:
    """The per-encoder part of ExtractConfig (same defaults)."""
    batch_size: int = ExtractConfig.batch_size
    dtype: str = ExtractConfig.dtype
    shard_size: int = ExtractConfig.shard_size
    workers: int | None = ExtractConfig.workers
    device: str = ExtractConfig.device
    autocast: str = ExtractConfig.autocast
    progress: bool = ExtractConfig.progress


def extract(manifest: str | Path | Manifest, encoders: Sequence[str | Encoder], out: str | Path = "cache", *,
            log: Callable[[str], None] | None = None, **options) -> ExtractReport:
    """Extract features of every manifest row with each encoder into out/<manifest>/<encoder>/.

    options: ExtractConfig's fields (batch_size, max_length, clean, layers, pooled_only, dtype, shard_size,
    num_shards, shard_index, workers, device, autocast, progress), each defaulting as there.
    encoders: registry names, hf:ORG/NAME, local folders, or built `Encoder` objects
    (whose own options then apply instead of max_length/clean/layers/pooled_only).
    num_shards/shard_index: this process writes shards k with k % num_shards == shard_index
    (default: from torchrun or SLURM array variables, else all shards).
    """
    config = ExtractConfig(**options)
    log = log or _log
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    for spec in encoders:  # fail on a typo before loading anything
        if not isinstance(spec, Encoder):
            check_encoder_name(spec)
    partition = resolve_partition(config.num_shards, config.shard_index)
    encoder_options = config.encoder_options()
    # and on a cache that will be refused (stale, other settings), before any model loads
    refuse_early_all(man, encoders, out, encoder_options, dtype=config.dtype, shard_size=config.shard_size)
    for spec in encoders:  # an exported fine-tuned encoder: the text preprocessing it was trained under
        mismatch = None if isinstance(spec, Encoder) else text_options_mismatch(spec, encoder_options)
        if mismatch and not config.force:
            raise ValueError(f"{mismatch}: extract with the values it was fine-tuned with, or pass --force")
        if mismatch:
            log(f"warning: {mismatch} (--force)")
    set_loading_bars(config.progress)  # transformers' own loading bars: not under --no-progress
    settings = ExtractSettings(config.batch_size, config.dtype, config.shard_size, config.workers, config.device,
                               config.autocast, config.progress)
    reports = []
    for spec in encoders:
        encoder = spec if isinstance(spec, Encoder) else build_encoder(spec, options=encoder_options)
        reports.append(extract_encoder(man, encoder, out, settings, partition, log))
    return ExtractReport(reports)


class ProgressLines:
    """Progress for a log: one line every `every` seconds (rows done, rate, time left) where a terminal
    would show a bar, so a long extraction is never silent; log None: no lines at all."""

    def __init__(self, name: str, total: int, log: Callable[[str], None] | None, every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.total, self.log, self.every, self.clock = name, total, log, every, clock
        self.done, self.start = 0, clock()
        self.last = self.start

    def update(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if self.log is None or now - self.last < self.every or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self.log(f"{self.name}: {self.done:,}/{self.total:,} rows, {rate:.1f} rows/s, about "
                 f"{_duration(left)} left")

    def close(self) -> None:
        pass


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def extract_encoder(manifest: Manifest, encoder: Encoder, out: str | Path, settings: ExtractSettings = ExtractSettings(),
                    partition: Partition = Partition(), log: Callable[[str], None] = _log) -> EncoderReport:
    device = resolve_device(settings.device)
    autocast = resolve_autocast(settings.autocast, device)
    shares_images = encoder.image is not None and encoder.text is None and encoder.per_image
    plan = CachePlan.build(manifest, encoder, out, dtype=settings.dtype, shard_size=settings.shard_size,
                           extract_config={"batch_size": settings.batch_size, "device_type": device.type,
                                           "autocast": autocast,
                                           **({"shared_images": "once per shard, by resolved path"}
                                              if shares_images else {})})
    plan.prepare()
    if "max_length_requested" in encoder.notes:
        log(f"{encoder.name}: --max-length {encoder.notes['max_length_requested']} is more than the model takes; "
            f"using {encoder.text.max_length}")

    mine = [k for k in range(len(plan.ranges)) if partition.owns(k)]
    report = EncoderReport(encoder.name, plan.folder, len(plan.ids), len(plan.ranges),
                           shards_other=len(plan.ranges) - len(mine),
                           bytes_per_row=int(sum(np.prod(s) * np.dtype(d).itemsize for s, d in plan.fields.values())))
    locks: dict[int, ShardLock] = {}
    try:
        todo = []
        for k in mine:
            if plan.shard_path(k).exists():
                report.shards_skipped.append(k)
                continue
            locks[k] = ShardLock(plan.folder / (plan.shard_path(k).name + LOCK_SUFFIX))
            locks[k].acquire(log)
            if plan.shard_path(k).exists():  # finished by another process while we waited
                locks.pop(k).release()
                report.shards_skipped.append(k)
            else:
                todo.append(k)
        if todo:
            encoder.to(device)
            started = time.perf_counter()
            _run(plan, encoder, todo, locks, settings, device, autocast, report, manifest, log)
            report.seconds = time.perf_counter() - started
    finally:
        for lock in locks.values():
            lock.release()
    report.complete = all(plan.shard_path(k).exists() for k in range(len(plan.ranges)))
    return report


def _run(plan: CachePlan, encoder: Encoder, todo: list[int], locks: dict[int, ShardLock], settings: ExtractSettings,
         device: torch.device, autocast: str, report: EncoderReport, manifest: Manifest, log) -> None:
    workers = default_workers() if settings.workers is None else settings.workers
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers already run in parallel
    ranges = [plan.ranges[k] for k in todo]
    shared = SharedRows(image_sources(manifest, plan.ranges)) if "shared_images" in plan.attrs["extract_config"] \
        else None
    loader = DataLoader(RowDataset(manifest, encoder.text, encoder.image),
                        batch_sampler=ShardBatchSampler(ranges, settings.batch_size,
                                                        None if shared is None else shared.computed),
                        num_workers=workers, collate_fn=encoder.collator(), pin_memory=device.type == "cuda")
    runner = BatchRunner(encoder, device, autocast, settings.dtype, settings.batch_size, log)

    def new_shard(k: int) -> ShardFile:
        a, b = plan.ranges[k]
        return ShardFile(plan.shard_path(k), a, b, plan.ids[a:b], plan.fields, plan.shard_attrs(k))

    def done(k: int) -> None:
        locks.pop(k).release()
        report.shards_written.append(k)

    writer = ShardWriter(new_shard, plan.shard_of, done)
    total = sum(b - a for a, b in ranges)
    if settings.progress and sys.stderr.isatty():
        bar = tqdm(total=total, unit="sample", desc=f"{encoder.name} ({len(todo)} shard(s))", dynamic_ncols=True,
                   file=sys.stderr)
    else:  # a log (or --no-progress): a line now and then, never a bar's carriage returns
        bar = ProgressLines(encoder.name, total, log if settings.progress else None)
    try:
        for batch in loader:
            rows, arrays, ok, problems = runner(batch)
            if shared is not None:
                rows, arrays, ok, problems = shared.expand(rows, arrays, ok, problems)
            writer.put(rows, arrays, ok, problems)
            report.bad_rows += [BadRow(int(r), plan.ids[r], p) for r, good, p in zip(rows, ok, problems) if not good]
            report.rows_computed += len(rows)
            bar.update(len(rows))
        writer.close()
        report.rows_shared = shared.copied_in(ranges) if shared is not None else 0
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
