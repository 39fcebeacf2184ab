"""The feature cache on disk: THE schema (version 1). Readers and writers import it.

Layout (one folder per manifest and encoder)::

    cache/<manifest-name>/<encoder>/
        index.json            layout + provenance, written once when the folder is created
        shard-00000.h5        rows [0, shard_size)
        shard-00001.h5        rows [shard_size, 2*shard_size) ...
        shard-00002.h5.partial  a shard being written (renamed to .h5 when complete)
        shard-00002.h5.lock     "<pid> <host>": the process writing that shard

A shard file exists under its final name only once every row in it is written,
so "the file exists" is the completeness test; nothing else records progress.

HDF5 datasets in every shard (n = rows in the shard, all row-aligned with the
manifest ids; every per-row field is chunked one row per chunk)::

    ids                 [n]        utf-8 string   manifest ids, in manifest order
    ok                  [n]        uint8          1 = features valid; 0 = bad row, stored as zeros
    problem             [n]        utf-8 string   why ok=0 ("" otherwise)

    text/cls            [n, d]     float          first token ([CLS] / <s>; CLIP: EOS state, unprojected)
    text/mean           [n, d]     float          mean of token states over the attention mask
    text/tokens         [n, L, d]  float          last hidden states, padded positions zeroed
    text/mask           [n, L]     uint8          attention mask (1 = real token)
    text/input_ids      [n, L]     int32          token ids after cleaning + truncation/padding to L
    text/hidden/<k>     [n, L, d]  float          hidden layer k (e.g. -2) as HF returns it, pads zeroed
    text/pooled         [n, p]     float          CLIP only: projected, L2-normalised text embedding

    image/pooled        [n, d]     float          CNN/ViT: global average of `image/tokens`;
                                                  CLIP: projected, L2-normalised image embedding
    image/cls           [n, d]     float          ViT/CLIP only: the CLS token (CLIP: post-LayerNorm)
    image/tokens        [n, P, d]  float          ViT: patch tokens without CLS; CNN: the HxW grid
                                                  flattened row-major (EfficientNet-Lite0: 49 x 1280)
    image/hidden/<k>    [n, P, d]  float          hidden layer k, same layout as image/tokens

"float" is float16 by default (values clamped to the float16 range) or float32
(`--dtype float32`). Token fields (tokens, mask, input_ids, hidden/*) are absent
in `--pooled-only` caches; `index.json["fields"]` lists exactly what is stored.

Provenance: every shard carries the same attributes (nested values as JSON
strings), also stored under "attrs" in index.json:

    schema_version, encoder, modality, model_id, revision, weights_sha256,
    preprocessing {max_length, clean, tokenizer | image_size, resize, mean, std, ...},
    encoder_source (an `export-encoder` folder: source run id, config hash, base encoder, weights hash),
    manifest_name, manifest_fingerprint, inputs_fingerprint (texts + images only),
    modality_inputs_fingerprint (what this encoder's modality read: texts and pairs, or images), manifest_rows,
    ids_sha256,
    dtype, pooled_only, layers, shard_size, fields,
    library_versions, msa_cache_version, extract_config {batch_size, device_type, autocast}

plus per shard: shard_index, row_start, row_stop. The keys in COMPAT_KEYS must
be identical for shards to belong to one cache; the rest is informational
(e.g. two machines with different torch builds may fill one cache).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from msa_cache.errors import UserError

SCHEMA_VERSION = 1
INDEX_FILE = "index.json"
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
DEFAULT_SHARD_SIZE = 1024
FLOAT_DTYPES = ("float16", "float32")
FLOAT16_MAX = 65504.0

IDS, OK, PROBLEM = "ids", "ok", "problem"
ROW_DATASETS = (IDS, OK, PROBLEM)
MODALITIES = ("text", "image", "both")

# Provenance that decides whether two shards (or a new run and an old cache) are the same cache.
COMPAT_KEYS = (
    "schema_version", "encoder", "modality", "model_id", "revision", "weights_sha256",
    "preprocessing", "manifest_fingerprint", "manifest_rows", "ids_sha256",
    "dtype", "pooled_only", "layers", "shard_size", "fields",
)
SHARD_KEYS = ("shard_index", "row_start", "row_stop")


class CacheError(UserError, RuntimeError):
    """A cache folder is missing, incomplete or inconsistent; the message says what to do."""


class CacheMismatchError(CacheError):
    """A run would add to a cache made with another encoder, preprocessing or manifest."""


def ids_sha256(ids: list[str]) -> str:
    """The hash of a manifest's ids (in order) that a cache records as ids_sha256."""
    return hashlib.sha256(json.dumps(ids, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.h5"


def shard_ranges(n_rows: int, shard_size: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the shards; an empty manifest still gets no shards."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    return [(s, min(s + shard_size, n_rows)) for s in range(0, n_rows, shard_size)]


def field_dtype(field: str, float_dtype: str) -> str:
    """Storage dtype of a field: masks uint8, token ids int32, everything else the float dtype."""
    if field.endswith("/mask"):
        return "uint8"
    if field.endswith("/input_ids"):
        return "int32"
    return float_dtype


def is_token_field(field: str) -> bool:
    """Fields with a per-token axis (absent from --pooled-only caches)."""
    leaf = field.split("/", 1)[1] if "/" in field else field
    return leaf in ("tokens", "mask", "input_ids") or leaf.startswith("hidden/")


def encode_attr(value: Any) -> Any:
    """HDF5 attributes hold scalars and strings; nested values go in as JSON text."""
    if value is None or isinstance(value, (dict, list, tuple, bool)):
        return json.dumps(value, sort_keys=True)
    return value


def decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        if value[:1] in ("{", "[") or value in ("null", "true", "false"):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    if hasattr(value, "item"):  # numpy scalar -> python
        return value.item()
    return value


def compat_view(attrs: dict) -> dict:
    """The part of the provenance that must match, JSON-normalised (tuples -> lists)."""
    return json.loads(json.dumps({k: attrs.get(k) for k in COMPAT_KEYS}, sort_keys=True))


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable 'key: old -> new' lines for the compat keys that differ."""
    a, b = compat_view(old), compat_view(new)
    diffs = []
    for key in COMPAT_KEYS:
        if a[key] == b[key]:
            continue
        if key == "fields" and diffs:
            continue  # field shapes follow from the settings already listed
        if isinstance(a[key], dict) and isinstance(b[key], dict):
            for sub in sorted(set(a[key]) | set(b[key])):
                if a[key].get(sub) != b[key].get(sub):
                    diffs.append(f"{key}.{sub}: {_short(a[key].get(sub))} -> {_short(b[key].get(sub))}")
        else:
            diffs.append(f"{key}: {_short(a[key])} -> {_short(b[key])}")
    return diffs


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_index(folder: Path) -> dict:
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise CacheError(f"{folder}: no {INDEX_FILE}; not a cache folder (expected cache/<manifest>/<encoder>).")
    try:
        index = json.loads(path.read_text())
    except ValueError as e:
        raise CacheError(f"{path}: unreadable ({e}); delete {folder} and run `msa-cache extract` again.")
    if not isinstance(index, dict):
        raise CacheError(f"{path}: not a JSON object; delete {folder} and run `msa-cache extract` again.")
    version = index.get("schema_version", 0)
    if not isinstance(version, int):
        raise CacheError(f"{path}: schema_version {_short(version)} is not a number; delete {folder} and run `msa-cache extract` again.")
    if version > SCHEMA_VERSION:
        raise CacheError(f"{path}: cache schema {version} is newer than this msa-cache reads ({SCHEMA_VERSION}); upgrade msa-cache.")
    problem = _index_problem(index)
    if problem:
        raise CacheError(f"{path}: {problem}; delete {folder} and run `msa-cache extract` again.")
    return index


def _index_problem(index: dict) -> str | None:
    """Why index.json cannot describe a cache (None when it can): the layout every reader relies on."""
    n, shards, fields, attrs = (index.get(k) for k in ("num_rows", "shards", "fields", "attrs"))
    if not isinstance(n, int) or n < 0:
        return "num_rows is missing or not a count"
    if not isinstance(attrs, dict) or not all(isinstance(attrs.get(k), str) for k in ("encoder", "modality")):
        return "attrs lack the encoder and modality"
    if not isinstance(fields, dict) or not all(
            isinstance(s, dict) and isinstance(s.get("shape"), list) and isinstance(s.get("dtype"), str)
            for s in fields.values()):
        return "fields are not {name: {shape, dtype}}"
    if not isinstance(shards, list):
        return "shards is not a list"
    expected = 0
    for k, s in enumerate(shards):
        # The file must be the k-th shard's own name: a path in it could read outside the folder.
        if not isinstance(s, dict) or s.get("file") != shard_name(k) or s.get("start") != expected \
                or not isinstance(s.get("stop"), int) or s["stop"] <= expected:
            return f"shard entry {k} is not {{file: {shard_name(k)}, start: {expected}, stop: > start}}"
        expected = s["stop"]
    if expected != n:
        return f"the shards cover {expected} rows, not num_rows {n}"
    return None
