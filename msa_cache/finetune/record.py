"""Recording an encoder in a run, and rebuilding exactly that encoder later.

A record holds the cache-provenance keys (schema.py): encoder name, model id,
weights hash and preprocessing. Cached runs get theirs from the caches' attrs,
fine-tuned runs from the encoders they started from. `rebuild_encoder` loads the
encoder again with the recorded max_length and cleaning and refuses, in one
line, when it cannot be loaded or when it loads other weights or preprocessing.
"""
from __future__ import annotations

from pathlib import Path

from msa_cache.encoders import ENCODERS, Encoder, EncoderOptions, EncoderUnavailable, build_encoder

# Preprocessing that changes the inputs (the tokenizer's recorded name may differ between machines).
CHECKED_PREPROCESSING = ("max_length", "clean", "image_size", "resize", "mean", "std", "interpolation")


class EncoderMismatch(EncoderUnavailable):
    """The recorded encoder loads, but not with the recorded weights or preprocessing."""


def encoder_record(encoder: Encoder) -> dict:
    return {
        "encoder": encoder.name, "modality": encoder.modality, "model_id": encoder.model_id,
        "revision": encoder.revision, "weights_sha256": encoder.weights_sha256,
        "preprocessing": encoder.preprocessing(), "layers": list(encoder.options.layers),
        "pooled_only": encoder.options.pooled_only,
        "encoder_source": encoder.source or None,  # an exported fine-tuned encoder: its run
    }


def record_options(record: dict) -> EncoderOptions:
    pre = record.get("preprocessing") or {}
    # A clamped max_length (CLIP: 77) is recorded with what was asked; asking the same clamps the same.
    max_length = pre.get("max_length_requested", pre.get("max_length", EncoderOptions.max_length))
    return EncoderOptions(max_length=int(max_length), clean=pre.get("clean", "none"),
                          layers=tuple(record.get("layers") or ()), pooled_only=bool(record.get("pooled_only")))


def _load(record: dict, options: EncoderOptions) -> Encoder:
    name, model_id = record["encoder"], record.get("model_id") or ""
    from msa_cache.finetune.baselines import BASELINES  # function-level: cached runs' predict never needs them

    for baseline in BASELINES.values():  # an encoder a baseline builds itself (VisualBERT)
        if name in baseline.own_encoders:
            return baseline.own_encoders[name](model_id, options=options)
    if name in ENCODERS or name.startswith("hf:"):
        return build_encoder(name, options=options)
    # A local model folder: recorded by the path given and, resolved, as model_id.
    for folder in (name, model_id):
        if folder and Path(folder).is_dir():
            return build_encoder(folder, options=options)
    raise EncoderUnavailable(f"encoder '{name}': its model folder is gone ({model_id or name} not found); "
                             "put the folder back, or re-run with an encoder that exists here")


def rebuild_encoder(record: dict, where: str = "run") -> Encoder:
    """The recorded encoder, loaded again and verified; EncoderUnavailable says why it cannot be."""
    name = record["encoder"]
    try:
        encoder = _load(record, record_options(record))
    except EncoderUnavailable as e:
        raise EncoderUnavailable(f"{where}: cannot load its encoder '{name}': {e}") from None
    want = record.get("weights_sha256")
    if want and encoder.weights_sha256 != want:
        raise EncoderMismatch(
            f"{where}: encoder '{name}' ({record.get('model_id')}) now loads weights with sha256 "
            f"{encoder.weights_sha256}, not the recorded {want}; the run was made with other weights "
            "(restore that model or folder, or re-run)")
    recorded, now = record.get("preprocessing") or {}, encoder.preprocessing()
    diffs = [f"{k}: {recorded[k]!r} -> {now.get(k)!r}" for k in CHECKED_PREPROCESSING
             if k in recorded and _norm(recorded[k]) != _norm(now.get(k))]
    if diffs:
        raise EncoderMismatch(f"{where}: encoder '{name}' preprocesses differently now ({'; '.join(diffs)})")
    return encoder


def _norm(value):
    if isinstance(value, (list, tuple)):
        return [round(float(x), 6) for x in value]
    return value
