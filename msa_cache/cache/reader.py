"""Reading a cache: the API the fit stage uses.

    with open_cache("cache/mvsa-single/minilm") as c:
        x = c.read("text/mean")                 # [rows, 384] float32, manifest order
        t = c.read("text/tokens", rows=[7, 3])  # only those rows are read from disk
        ok = c.ok                               # bool per row; False rows are zeros

Reads are lazy (one row per HDF5 chunk), so a cache bigger than RAM still
trains. HDF5 handles are kept open per process and reopened after a fork
(DataLoader workers), because h5py handles must not cross a fork.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from msa_cache.cache.schema import IDS, INDEX_FILE, OK, PROBLEM, CacheError, read_index


def _out_dtype(stored: str) -> np.dtype:
    if stored == "uint8":  # masks
        return np.dtype(bool)
    if stored.startswith("int"):  # token ids: int64, what torch embeddings take
        return np.dtype(np.int64)
    return np.dtype(np.float32)


class EncoderCache:
    """One encoder's cache folder (cache/<manifest>/<encoder>), rows in manifest order."""

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        self.path = Path(path)
        self.index = read_index(self.path)
        self.attrs: dict = self.index["attrs"]
        self.encoder: str = self.attrs["encoder"]
        self.modality: str = self.attrs["modality"]
        self._shards = self.index["shards"]
        self._starts = np.array([s["start"] for s in self._shards], dtype=np.int64)
        self._stops = np.array([s["stop"] for s in self._shards], dtype=np.int64)
        self._fields: dict = self.index["fields"]
        self.missing = [s["file"] for s in self._shards if not (self.path / s["file"]).is_file()]
        if self.missing and not allow_incomplete:
            raise CacheError(
                f"{self.path}: incomplete, {len(self.missing)} of {len(self._shards)} shards missing "
                f"({', '.join(self.missing[:3])}{', ...' if len(self.missing) > 3 else ''}); run the same "
                "`msa-cache extract` command again to finish it (finished shards are kept)")
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._ids: list[str] | None = None
        self._ok: np.ndarray | None = None

    # -- layout --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index["num_rows"])

    def fields(self) -> list[str]:
        return list(self._fields)

    def row_shape(self, field: str) -> tuple:
        return tuple(self._field(field)["shape"])

    def dtype(self, field: str) -> str:
        """Storage dtype (float16/float32/uint8/int32); `read` returns float32/bool/int64."""
        return self._field(field)["dtype"]

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [x.decode("utf-8") if isinstance(x, bytes) else x for x in self._read_all(IDS, object)]
        return self._ids

    @property
    def ok(self) -> np.ndarray:
        if self._ok is None:
            self._ok = self._read_all(OK, bool)
        return self._ok

    @property
    def problems(self) -> list[str]:
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in self._read_all(PROBLEM, object)]

    # -- data ----------------------------------------------------------------------------
    def read(self, field: str, rows=None) -> np.ndarray:
        """Rows (global indices, any order, repeats allowed; None = all) of one field."""
        spec = self._field(field)
        out_dtype = _out_dtype(spec["dtype"])
        if rows is None:
            return self._read_all(field, out_dtype)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = rows[(rows < 0) | (rows >= len(self))][0]
            raise IndexError(f"{self.path}: row {bad} out of range 0..{len(self) - 1}")
        # Sorted unique rows grouped by shard: each shard is visited once, in disk order.
        uniq, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(uniq), *spec["shape"]), dtype=out_dtype)
        shard_of = np.searchsorted(self._stops, uniq, side="right")
        for k in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == k)
            local = uniq[sel] - self._starts[k]
            ds = self._file(int(k))[field]
            lo, hi = int(local[0]), int(local[-1]) + 1
            if hi - lo <= 2 * len(local):  # dense: one contiguous read beats many small ones
                out[sel] = ds[lo:hi][local - lo]
            else:
                # One read per row (= one chunk): h5py's fancy indexing `ds[local]` builds a
                # point selection that is ~50x slower for a scattered training batch.
                for j, r in zip(sel, local):
                    out[j] = ds[int(r)]
        if len(uniq) == len(rows) and (len(rows) < 2 or bool((rows[1:] > rows[:-1]).all())):
            return out  # already in the order asked for (e.g. all rows): no second copy
        return out[inverse.reshape(-1)]

    def _read_all(self, name: str, dtype) -> np.ndarray:
        parts = [self._file(k)[name][...] for k in range(len(self._shards))]
        if not parts:
            shape = tuple(self._fields[name]["shape"]) if name in self._fields else ()
            return np.empty((0, *shape), dtype=dtype)
        return np.concatenate(parts).astype(dtype, copy=False)

    def _field(self, field: str) -> dict:
        try:
            return self._fields[field]
        except KeyError:
            raise KeyError(f"{self.path}: no field '{field}'; it has {self.fields()}") from None

    def _file(self, k: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(k)
        if f is None:
            path = self.path / self._shards[k]["file"]
            if not path.is_file():
                raise CacheError(f"{path}: shard missing; run the same `msa-cache extract` command again")
            f = self._files[k] = h5py.File(path, "r")
        return f

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        if os.getpid() == self._pid:
            for f in self._files.values():
                f.close()
        self._files = {}

    def __enter__(self) -> "EncoderCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EncoderCache({str(self.path)!r}, encoder={self.encoder!r}, rows={len(self)}, fields={self.fields()})"


def open_cache(path: str | Path, allow_incomplete: bool = False) -> EncoderCache:
    """Open cache/<manifest>/<encoder>; an incomplete cache is refused unless allow_incomplete."""
    return EncoderCache(path, allow_incomplete=allow_incomplete)


def list_caches(root: str | Path, manifest_name: str | None = None) -> dict[str, Path]:
    """Encoder folder name -> path of the caches for one manifest.

    root may be the cache root (then manifest_name picks the manifest, or the only
    one there is used) or a manifest folder itself.
    """
    root = Path(root)
    if manifest_name is not None:
        folder = root / manifest_name
    elif any(root.glob(f"*/{INDEX_FILE}")):
        folder = root
    else:
        manifests = sorted({p.parent.parent for p in root.glob(f"*/*/{INDEX_FILE}")})
        if len(manifests) > 1:
            raise ValueError(f"{root} holds caches of several manifests ({', '.join(m.name for m in manifests)}); "
                             "pass manifest_name")
        if not manifests:
            return {}
        folder = manifests[0]
    return {p.parent.name: p.parent for p in sorted(folder.glob(f"*/{INDEX_FILE}"))}
