"""`msa-cache cache info`: what a cache holds (encoders, rows, dims, dtype, size, bad rows)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from msa_cache.cache.reader import open_cache
from msa_cache.cache.verify import cache_folders

MAX_BAD_LISTED = 10


def cache_info(path: str | Path) -> list[dict]:
    """One dict per encoder folder found at path (an encoder folder, a manifest folder or the cache root)."""
    infos = []
    for folder in cache_folders(path):
        with open_cache(folder, allow_incomplete=True) as c:
            present = [s for s in c.index["shards"] if (folder / s["file"]).is_file()]
            rows_done = sum(s["stop"] - s["start"] for s in present)
            disk = sum((folder / s["file"]).stat().st_size for s in present)
            ok, problems, ids = (c.ok, c.problems, c.ids) if not c.missing else (np.ones(0, bool), [], [])
            bad = [(ids[i], problems[i]) for i in np.flatnonzero(~ok)]
            infos.append({
                "folder": str(folder), "encoder": c.encoder, "modality": c.modality,
                "model_id": c.attrs.get("model_id"), "revision": c.attrs.get("revision"),
                "weights_sha256": c.attrs.get("weights_sha256"), "manifest": c.attrs.get("manifest_name"),
                "encoder_source": c.attrs.get("encoder_source"),
                "rows": len(c), "shards_done": len(present), "shards_total": len(c.index["shards"]),
                "dtype": c.attrs.get("dtype"), "preprocessing": c.attrs.get("preprocessing"),
                "fields": {f: {"shape": list(c.row_shape(f)), "dtype": c.dtype(f)} for f in c.fields()},
                "bytes_per_row": int(sum(np.prod(s["shape"]) * np.dtype(s["dtype"]).itemsize
                                         for s in c.index["fields"].values())),
                "disk_bytes_per_row": disk / rows_done if rows_done else 0.0,
                "bad_rows": len(bad) if not c.missing else None, "bad_examples": bad[:MAX_BAD_LISTED],
            })
    return infos


def format_info(infos: list[dict]) -> str:
    if not infos:
        return "no caches found (expected cache/<manifest>/<encoder>/index.json)"
    lines = []
    for i in infos:
        state = "complete" if i["shards_done"] == i["shards_total"] else f"INCOMPLETE {i['shards_done']}/{i['shards_total']} shards"
        lines.append(f"{i['folder']}")
        lines.append(f"  encoder {i['encoder']} ({i['modality']}), model {i['model_id']}"
                     f"{' @ ' + str(i['revision']) if i['revision'] else ''}, weights {i['weights_sha256']}")
        lines.append(f"  manifest {i['manifest']}: {i['rows']} rows, {state}, dtype {i['dtype']}, "
                     f"{i['bytes_per_row'] / 1024:.1f} KiB/row of data, {i['disk_bytes_per_row'] / 1024:.1f} KiB/row on disk")
        src = i.get("encoder_source")
        if src:
            lines.append(f"  fine-tuned in run {src.get('run_id')} ({src.get('head')}, seed {src.get('seed')}) "
                         f"from {src.get('base_encoder')} (weights {src.get('base_weights_sha256')})")
        pre = i["preprocessing"] or {}
        lines.append("  preprocessing " + ", ".join(f"{k}={v}" for k, v in sorted(pre.items())))
        for name, spec in i["fields"].items():
            lines.append(f"    {name:<22} {str(tuple(spec['shape'])):<14} {spec['dtype']}")
        if i["bad_rows"] is None:
            lines.append("  bad rows: unknown until complete")
        else:
            lines.append(f"  bad rows: {i['bad_rows']} (stored as zeros, ok=0)")
            lines += [f"    {rid}: {why}" for rid, why in i["bad_examples"]]
            if i["bad_rows"] > len(i["bad_examples"]):
                lines.append(f"    ... {i['bad_rows'] - len(i['bad_examples'])} more")
    return "\n".join(lines)
