"""Encoder names: the catalog's (encoders/catalog.py: names, modalities, help; no torch) and the rules for
the names outside it. Besides catalog names the CLI's `--encoder` takes `hf:ORG/NAME` (any Hugging Face
model) or a local model folder, whose modality is read from the model config (see auto.py). Building by
name is in build.py.
"""
from __future__ import annotations

import re
from pathlib import Path

from msa_cache.encoders.catalog import ENCODERS


def is_hf_spec(name: str) -> bool:
    """`hf:ORG/NAME` or an existing local folder (not a registry name)."""
    return name.startswith("hf:") or (name not in ENCODERS and Path(name).is_dir())


def check_encoder_name(name: str) -> str:
    if name in ENCODERS or is_hf_spec(name):
        return name
    raise ValueError(f"unknown encoder '{name}'; choose one of {', '.join(sorted(ENCODERS))}, "
                     "or hf:ORG/NAME, or a local model folder")


def encoder_folder_name(name: str) -> str:
    """Folder under cache/<manifest>/ for an encoder: registry names as is, others slugged."""
    if name in ENCODERS or (re.fullmatch(r"[A-Za-z0-9._-]+", name) and not Path(name).is_dir()):
        return name  # registry names and custom names given to in-memory encoders
    if name.startswith("hf:"):
        return "hf-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name[3:].replace("/", "--"))
    return "path-" + re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).resolve().name)
