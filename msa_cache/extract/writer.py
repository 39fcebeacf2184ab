"""Writing shards: a background thread fed through a bounded queue, so HDF5 writes
overlap the next batch's compute while memory stays bounded.

Each shard is written as `shard-NNNNN.h5.partial` and renamed to its final name
only when every row is in (after an fsync), so a finished shard is never torn
and a killed run leaves at most one partial file per writer, which is redone.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from msa_cache.cache.schema import IDS, OK, PARTIAL_SUFFIX, PROBLEM, encode_attr

_STOP, _ABORT = object(), object()
# Test hook: seconds to sleep after each written batch, so a test can kill a run mid-shard.
DELAY_ENV = "MSA_CACHE_TEST_BATCH_DELAY"


class ShardFile:
    """One shard being filled, rows [start, stop), under its .partial name."""

    def __init__(self, path: Path, start: int, stop: int, ids: list[str],
                 fields: dict[str, tuple[tuple[int, ...], str]], attrs: dict):
        self.path, self.start, self.stop = Path(path), start, stop
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        if self.partial.exists():  # left by a killed run; we hold the lock, so it is ours to redo
            self.partial.unlink()
        n = stop - start
        strings = h5py.string_dtype("utf-8")
        self.h5 = h5py.File(self.partial, "w")
        self.h5.create_dataset(IDS, data=np.array(ids, dtype=object), dtype=strings)
        self.h5.create_dataset(OK, shape=(n,), dtype="uint8")
        self.h5.create_dataset(PROBLEM, shape=(n,), dtype=strings)
        for name, (shape, dtype) in fields.items():
            # One row per chunk: reading a random batch of rows touches only those rows.
            self.h5.create_dataset(name, shape=(n, *shape), dtype=dtype, chunks=(1, *shape))
        for key, value in attrs.items():
            self.h5.attrs[key] = encode_attr(value)
        self.pending = n

    def write(self, rows: np.ndarray, arrays: dict[str, np.ndarray], ok: np.ndarray, problems: list[str]) -> None:
        """Write global rows in increasing order: consecutive ones as a slice, others (a batch plus
        the rows that share its images, see shared.py) row by row index."""
        local = np.asarray(rows, dtype=np.int64) - self.start
        if np.any(np.diff(local) <= 0):
            raise ValueError(f"{self.path.name}: rows {rows[0]}..{rows[-1]} are not in increasing order")
        a, b = int(local[0]), int(local[-1]) + 1
        where = slice(a, b) if b - a == len(local) else local.tolist()
        for name, values in arrays.items():
            self.h5[name][where] = values
        self.h5[OK][where] = ok.astype(np.uint8)
        self.h5[PROBLEM][where] = np.array(problems, dtype=object)
        self.pending -= len(rows)

    def finish(self) -> None:
        self.h5.close()
        fd = os.open(self.partial, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name says "complete"
        finally:
            os.close(fd)
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        try:
            self.h5.close()
        except Exception:  # closing a half-written file may fail; the partial is redone anyway
            pass


class ShardWriter:
    """Background writer. `put` batches in row order; `close` when done, `abort` on error."""

    def __init__(self, new_shard: Callable[[int], ShardFile], shard_of: Callable[[np.ndarray], np.ndarray],
                 on_done: Callable[[int], None], max_queue: int = 4):
        self.new_shard, self.shard_of, self.on_done = new_shard, shard_of, on_done
        self.delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.error: BaseException | None = None
        self.files: dict[int, ShardFile] = {}
        self.thread = threading.Thread(target=self._run, name="msa-cache-writer", daemon=True)
        self.thread.start()

    def put(self, rows: np.ndarray, arrays: dict, ok: np.ndarray, problems: list[str]) -> None:
        item = (rows, arrays, ok, problems)
        while True:
            self._raise_if_failed()
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._stop(_STOP)
        self._raise_if_failed()
        if self.files:  # a bug, not a user error: the loader yielded fewer rows than planned
            unfinished = sorted(self.files)
            for f in self.files.values():
                f.abort()
            raise RuntimeError(f"writer closed with unfinished shards {unfinished}")

    def abort(self) -> None:
        self._stop(_ABORT)

    def _stop(self, token) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(token, timeout=0.5)
                break
            except queue.Full:
                continue
        self.thread.join()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing the cache failed: {self.error}") from self.error

    def _run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is _STOP:
                    return
                if item is _ABORT:
                    break
                self._write(*item)
                if self.delay:
                    time.sleep(self.delay)
        except BaseException as e:  # reported to the main thread by put/close
            self.error = e
        for f in self.files.values():
            f.abort()
        self.files.clear()

    def _write(self, rows: np.ndarray, arrays: dict, ok: np.ndarray, problems: list[str]) -> None:
        shards = self.shard_of(rows)
        for k in np.unique(shards):
            sel = np.flatnonzero(shards == k)
            k = int(k)
            f = self.files.get(k) or self.files.setdefault(k, self.new_shard(k))
            f.write(rows[sel], {n: v[sel] for n, v in arrays.items()}, ok[sel], [problems[i] for i in sel])
            if f.pending == 0:
                f.finish()
                del self.files[k]
                self.on_done(k)
