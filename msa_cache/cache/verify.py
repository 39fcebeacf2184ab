"""`msa-cache cache verify`: is a cache complete and consistent?

Checks: every shard in the index is present; each shard's provenance equals the
index's (COMPAT_KEYS) and its rows/ids are the right slice of the manifest;
every field has the indexed shape and dtype; no NaN or inf anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from msa_cache.cache.schema import (
    IDS, INDEX_FILE, LOCK_SUFFIX, OK, PARTIAL_SUFFIX, CacheError, compat_view, config_differences, decode_attr,
    ids_sha256, read_index,
)
from msa_cache.manifest.schema import Manifest, read_manifest

SCAN_ROWS = 256  # rows per read when scanning values (bounded memory)


@dataclass
class VerifyResult:
    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: int = 0
    shards: int = 0
    bad_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"OK {self.path}: {self.rows} rows in {self.shards} shard(s), {self.bad_rows} bad row(s) (ok=0)"
                if self.ok else f"FAILED {self.path}: {len(self.problems)} problem(s)")
        return "\n".join([head] + [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes])


def cache_folders(path: str | Path) -> list[Path]:
    """An encoder folder itself, or every encoder folder under a manifest folder or cache root."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        return [path]
    return sorted({p.parent for p in list(path.glob(f"*/{INDEX_FILE}")) + list(path.glob(f"*/*/{INDEX_FILE}"))})


def verify_cache(path: str | Path, manifest: str | Path | Manifest | None = None,
                 scan_values: bool = True) -> VerifyResult:
    path = Path(path)
    res = VerifyResult(path)
    try:
        index = read_index(path)
    except CacheError as e:
        res.problems.append(str(e))
        return res
    attrs, shards = index["attrs"], index["shards"]
    res.rows, res.shards = index["num_rows"], len(shards)
    ids: list[str] = []
    for k, shard in enumerate(shards):
        file = path / shard["file"]
        if (path / (shard["file"] + LOCK_SUFFIX)).exists() or (path / (shard["file"] + PARTIAL_SUFFIX)).exists():
            res.notes.append(f"{shard['file']}: a lock or partial file is present (being written, or left by a "
                             "killed run that the same extract command will redo)")
        if not file.is_file():
            res.problems.append(f"{shard['file']} missing (rows {shard['start']}-{shard['stop'] - 1}); run the "
                                "extract command again (with the same --num-shards/--shard-index if it was split)")
            continue
        try:
            ids += _check_shard(file, k, shard, index, res, scan_values)
        except OSError as e:
            res.problems.append(f"{shard['file']}: unreadable HDF5 ({e}); delete it and run the extract command again")
    if not res.problems:
        _check_ids(ids, attrs, manifest, res)
    return res


def _check_shard(file: Path, k: int, shard: dict, index: dict, res: VerifyResult, scan_values: bool) -> list[str]:
    name, n = file.name, shard["stop"] - shard["start"]
    with h5py.File(file, "r") as f:
        attrs = {key: decode_attr(v) for key, v in f.attrs.items()}
        diffs = config_differences(index["attrs"], attrs) if compat_view(attrs) != compat_view(index["attrs"]) else []
        if diffs:
            res.problems.append(f"{name}: provenance differs from index.json ({'; '.join(diffs)})")
        if (attrs.get("row_start"), attrs.get("row_stop")) != (shard["start"], shard["stop"]):
            res.problems.append(f"{name}: rows {attrs.get('row_start')}-{attrs.get('row_stop')} but the index says "
                                f"{shard['start']}-{shard['stop']}")
        if attrs.get("library_versions") != index["attrs"].get("library_versions"):
            res.notes.append(f"{name}: written with other library versions than index.json (allowed)")
        for field, spec in index["fields"].items():
            want = (n, *spec["shape"])
            if field not in f:
                res.problems.append(f"{name}: field {field} missing")
            elif f[field].shape != want or str(f[field].dtype) != spec["dtype"]:
                res.problems.append(f"{name}: {field} is {f[field].shape} {f[field].dtype}, expected {want} {spec['dtype']}")
            elif scan_values and f[field].dtype.kind == "f":
                for a in range(0, n, SCAN_ROWS):
                    block = f[field][a:a + SCAN_ROWS]
                    if not np.isfinite(block).all():
                        row = shard["start"] + a + int(np.flatnonzero(~np.isfinite(block).reshape(len(block), -1).all(1))[0])
                        res.problems.append(f"{name}: {field} has NaN/inf (first at row {row}); delete this shard "
                                            "and run the extract command again (try --dtype float32)")
                        break
        res.bad_rows += int((f[OK][...] == 0).sum())
        ids = [x.decode("utf-8") if isinstance(x, bytes) else x for x in f[IDS][...]]
        if len(ids) != n:
            res.problems.append(f"{name}: {len(ids)} ids for {n} rows")
    return ids


def _check_ids(ids: list[str], attrs: dict, manifest, res: VerifyResult) -> None:
    if ids_sha256(ids) != attrs.get("ids_sha256"):
        res.problems.append("the ids in the shards are not the manifest ids the cache was made for (order or content)")
    if manifest is None:
        return
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    problem = manifest_mismatch(ids, attrs, man)
    if problem:
        res.problems.append(problem + ("" if "another manifest" in problem else "; re-extract into a fresh --out"))


def manifest_mismatch(cache_ids: list[str], attrs: dict, manifest: Manifest) -> str | None:
    """Why a cache (its ids and provenance attrs) was not made from `manifest` as it is now; None if it was.

    Ids alone are not enough: a manifest with one edited text keeps its ids, and its cache would
    then silently hold features of the old rows (the fingerprint covers them). A manifest whose
    labels or splits alone changed still fits a cache that recorded its inputs' fingerprint
    (texts, pairs, images): the features do not depend on labels, and runs hash the full
    manifest fingerprint into their identity anyway. A cache that recorded the fingerprint of its own
    modality's inputs (modality_inputs_fingerprint) also fits when only the other modality's inputs
    changed (an image cache after the texts were edited or their pairs dropped)."""
    want = manifest.ids
    if want != cache_ids:
        row = next((i for i, (a, b) in enumerate(zip(want, cache_ids)) if a != b), min(len(want), len(cache_ids)))
        return (f"ids differ from manifest {manifest.name} at row {row} "
                f"(manifest {want[row] if row < len(want) else '<end>'}, "
                f"cache {cache_ids[row] if row < len(cache_ids) else '<end>'}): the cache belongs to another manifest")
    if manifest.fingerprint() == attrs.get("manifest_fingerprint"):
        return None
    # The encoder's own modality's inputs (an image cache outlives a change of the texts); caches made
    # before that was recorded: all inputs (texts and images), then only labels or splits may change.
    modality_inputs = attrs.get("modality_inputs_fingerprint")
    if modality_inputs is not None:
        if modality_inputs == manifest.inputs_fingerprint(attrs.get("modality")):
            return None
        return (f"manifest {manifest.name} changed since extraction in what this {attrs.get('modality')} encoder "
                f"read (fingerprint {manifest.fingerprint()} vs {attrs.get('manifest_fingerprint')})")
    inputs = attrs.get("inputs_fingerprint")
    if inputs is None or inputs != manifest.inputs_fingerprint():
        return (f"manifest {manifest.name} changed since extraction (fingerprint {manifest.fingerprint()} vs "
                f"{attrs.get('manifest_fingerprint')})")
    return None
