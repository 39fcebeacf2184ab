"""`export-encoder`: one fine-tuned encoder of a finished fine-tune run -> a local model folder.

The folder is what `extract --encoder OUT` (and `finetune`, `predict`) accept, so stage-1
fine-tuned features go into a cache like any other encoder's (seed 002: fine-tune each
encoder alone, freeze, then train the fusion on their embeddings). Hugging Face encoders are
saved with `save_pretrained` (a normal HF folder); registered CNNs as a safetensors state
dict that the registry's blank architecture loads. `msa_cache_encoder.json` records the
source run (id, config hash, seed, head), the base encoder and both weights hashes; the
cache's provenance copies it (`encoder_source`). The folder is written beside OUT, loaded back
and checked against the fine-tuned weights before it is renamed to OUT: nothing half-written.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from msa_cache.encoders import ENCODERS, Encoder
from msa_cache.encoders.base import weights_sha256
from msa_cache.encoders.exported import (
    EXPORT_FILE, EXPORT_FORMAT, STATE_DICT_FILE, build_exported, is_exported, read_export_info,
)
from msa_cache.encoders.text import TextEncoder
from msa_cache.encoders.vision import VisionEncoder
from msa_cache.finetune.config import EXPORTABLE, FinetuneSpec
from msa_cache.finetune.load import load_finetune_run
from msa_cache.train.identity import FINETUNE, config_hash, run_mode
from msa_cache.train.rundir import weights_file



def export_encoder(run: str | Path, out: str | Path, modality: str, log: Callable[[str], None] = print) -> dict:
    """Write the run's fine-tuned `modality` encoder to the folder `out`; return its export record."""
    run, out = Path(run), Path(out)
    if modality not in EXPORTABLE:
        raise ValueError(f"--modality {modality!r}: choose one of {', '.join(EXPORTABLE)}")
    config = _finished_finetune_config(run)
    spec = FinetuneSpec.from_dict(config["spec"])
    if spec.baseline is not None:
        raise ValueError(f"{run}: a --baseline {spec.baseline} run; its towers are not a standalone {modality} "
                         "encoder: export from a `finetune --head ...` run")
    record = config["encoders"].get(modality)
    if record is None:
        raise ValueError(f"{run}: the run has no {modality} encoder (it has {', '.join(sorted(config['encoders']))})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists; give a new folder (an export is never overwritten)")
    if modality not in spec.train.unfreeze:
        log(f"note: {run} never unfroze its {modality} encoder; the exported weights are the base encoder's")

    model, _ = load_finetune_run(run, config)
    encoder = model.encoders[modality]
    tuned_hash = weights_sha256(encoder.model)
    info = {
        "format": EXPORT_FORMAT,
        "modality": modality,
        "loader": "hf" if isinstance(encoder, (TextEncoder, VisionEncoder)) else "state_dict",
        "architecture": _architecture(record),
        "preprocessing": encoder.preprocessing(),
        "weights_sha256": tuned_hash,
        "source": {
            "run_id": "/".join(run.resolve().parts[-3:]),  # <manifest>/<run family>/seed-K
            "run_path": str(run.resolve()),
            "run_config_hash": config_hash(spec.identity(config["manifest_fingerprint"], config["encoders"])),
            "head": spec.head, "seed": spec.seed,
            "base_encoder": record["encoder"], "base_model_id": record.get("model_id"),
            "base_weights_sha256": record.get("weights_sha256"),
            "weights_sha256": tuned_hash,
        },
    }
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write(encoder, info, tmp)
        loaded = build_exported(str(out), tmp, verify=False)
        if loaded.weights_sha256 != tuned_hash:
            raise RuntimeError(f"export of {run}: the written folder loads weights {loaded.weights_sha256}, "
                               f"not the fine-tuned {tuned_hash}")
        if out.exists():
            out.rmdir()  # checked empty above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _finished_finetune_config(run: Path) -> dict:
    path = run / "config.json"
    if not path.is_file() or not (run / "metrics.json").is_file() or weights_file(run) is None:
        raise FileNotFoundError(f"{run}: not a finished run (needs config.json, metrics.json, model.safetensors); "
                                "give a runs/<manifest>/<family>/seed-K folder")
    config = json.loads(path.read_text())
    if run_mode(config) != FINETUNE:
        raise ValueError(f"{run}: a `fit` run trains no encoder; export from a `msa-cache finetune` run")
    return config


def _architecture(record: dict) -> str | None:
    """The registry encoder whose blank architecture loads the state dict (None for HF folders)."""
    name = record["encoder"]
    if name in ENCODERS:
        return name
    for folder in (name, record.get("model_id") or ""):  # re-exporting an exported encoder
        if folder and is_exported(folder):
            return read_export_info(folder).get("architecture")
    return None


def _write(encoder: Encoder, info: dict, folder: Path) -> None:
    if info["loader"] == "hf":
        encoder.model.save_pretrained(str(folder), safe_serialization=True)
        if encoder.text is not None:
            encoder.text.tokenizer.save_pretrained(str(folder))
    else:
        entry = ENCODERS.get(info["architecture"] or "")
        if entry is None or entry.blank is None:
            raise ValueError(f"encoder '{info['source']['base_encoder']}' is neither a Hugging Face model nor a "
                             "registered architecture that can be rebuilt; it cannot be exported")
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous().clone() for k, v in encoder.model.state_dict().items()},
                  str(folder / STATE_DICT_FILE))
    (folder / EXPORT_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
