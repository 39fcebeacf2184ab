"""Model folders written by `msa-cache export-encoder`: a fine-tuned encoder, loadable by path.

    OUT/msa_cache_encoder.json   what it is: modality, how to load it, the image preprocessing,
                                 where it came from (run id, run config hash, base encoder and its
                                 weights hash) and the exported weights' hash
    OUT/config.json, model.safetensors, tokenizer files     loader "hf": a normal Hugging Face folder
    OUT/encoder.safetensors                                 loader "state_dict": the weights of a
                                                            registered non-HF encoder (CNNs), whose
                                                            architecture the registry builds blank

`--encoder OUT` (extract, fit's predict, finetune) comes here through `build_encoder`. The
loaded weights must hash to the recorded value, so a changed folder is refused, not used.
"""
from __future__ import annotations

import json
from pathlib import Path

from msa_cache.encoders.base import Encoder, EncoderOptions, ImageSpec
from msa_cache.encoders.hub import EncoderUnavailable, load_pretrained
from msa_cache.settings import shown

EXPORT_FILE = "msa_cache_encoder.json"
STATE_DICT_FILE = "encoder.safetensors"
EXPORT_FORMAT = 1


def is_exported(folder: str | Path) -> bool:
    return (Path(folder) / EXPORT_FILE).is_file()


def read_export_info(folder: str | Path) -> dict:
    path = Path(folder) / EXPORT_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EncoderUnavailable(f"{path}: unreadable ({e}); export the encoder again") from None
    if info.get("format") != EXPORT_FORMAT:
        raise EncoderUnavailable(f"{path}: export format {shown(info.get('format'))} is not {EXPORT_FORMAT}; "
                                 "export the encoder again with this version")
    return info


# Text preprocessing a fine-tuned encoder learned under; extracting under other values feeds it other text.
TRAINED_TEXT_OPTIONS = (("clean", "--clean"), ("max_length", "--max-length"))


def text_options_mismatch(folder: str | Path, options: EncoderOptions) -> str | None:
    """How `options` differ from the --clean / --max-length the exported text encoder in `folder` was
    fine-tuned with, naming both values; None when they agree (or it is not an exported text encoder)."""
    if not is_exported(folder):
        return None
    info = read_export_info(folder)
    pre = info.get("preprocessing") or {}
    if info.get("modality") != "text":
        return None
    trained = {"clean": pre.get("clean", "none"),
               # a clamped length (more than the model takes) is recorded with what was asked
               "max_length": pre.get("max_length_requested", pre.get("max_length"))}
    asked = {"clean": options.clean, "max_length": options.max_length}
    diffs = [f"{flag} {asked[key]} (fine-tuned with {flag} {trained[key]})"
             for key, flag in TRAINED_TEXT_OPTIONS if trained[key] is not None and str(trained[key]) != str(asked[key])]
    if not diffs:
        return None
    run = (info.get("source") or {}).get("run_id", "its run")
    return f"encoder {folder}: exported from {run}; extracting with {' and '.join(diffs)} feeds it other text " \
           "than it was trained on"


def build_exported(name: str, folder: str | Path, *, options: EncoderOptions = EncoderOptions(),
                   verify: bool = True) -> Encoder:
    """The exported encoder; `verify` refuses weights that do not hash to the recorded value."""
    folder = Path(folder).resolve()
    info = read_export_info(folder)
    if info["loader"] == "hf":
        encoder = _load_hf(name, folder, info, options)
    elif info["loader"] == "state_dict":
        encoder = _load_state_dict(name, folder, info, options)
    else:
        raise EncoderUnavailable(f"{folder / EXPORT_FILE}: unknown loader {shown(info['loader'])}")
    encoder.model_id, encoder.revision = str(folder), None
    encoder.source = dict(info["source"])
    if verify and info.get("weights_sha256") and encoder.weights_sha256 != info["weights_sha256"]:
        raise EncoderUnavailable(f"{folder}: its weights hash to {encoder.weights_sha256}, not the exported "
                                 f"{info['weights_sha256']}; the folder was changed: export it again")
    return encoder


def _image_spec(info: dict) -> ImageSpec:
    pre = info["preprocessing"]
    return ImageSpec(size=int(pre["image_size"]), resize=pre["resize"], mean=tuple(pre["mean"]),
                     std=tuple(pre["std"]), interpolation=pre["interpolation"])


def _load_hf(name: str, folder: Path, info: dict, options: EncoderOptions) -> Encoder:
    if info["modality"] == "text":
        from msa_cache.encoders.text import TextEncoder

        encoder = TextEncoder.from_pretrained(name, str(folder), options=options)
        # The base's tokenizer name, not this machine's folder path (the files are the same tokenizer).
        encoder.text.tokenizer_name = info["preprocessing"].get("tokenizer") or encoder.text.tokenizer_name
        return encoder
    from transformers import AutoModel

    from msa_cache.encoders.vision import VisionEncoder

    model = load_pretrained(name, str(folder), AutoModel.from_pretrained)
    return VisionEncoder(name, model, _image_spec(info), model_id=str(folder), options=options)


def _load_state_dict(name: str, folder: Path, info: dict, options: EncoderOptions) -> Encoder:
    from safetensors.torch import load_file

    from msa_cache.encoders.registry import ENCODERS

    entry = ENCODERS.get(info["architecture"])
    if entry is None or entry.blank is None:
        raise EncoderUnavailable(f"{folder}: architecture '{info['architecture']}' is not a registered encoder "
                                 "that can be built without weights here")
    encoder = entry.build(model=entry.make_blank(), options=options)
    encoder.name = name
    encoder.model.load_state_dict(load_file(str(folder / STATE_DICT_FILE)))
    encoder._weights_sha256 = None  # the builder may have hashed the blank weights
    if encoder.image is not None:
        encoder.image = _image_spec(info)
    return encoder
