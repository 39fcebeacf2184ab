"""Image encoders built on Hugging Face vision models (ViT and anything AutoModel loads).

Stored per row: `image/tokens` (ViT: patch tokens, CLS kept apart in `image/cls`;
a conv net's HxW grid flattened row-major), `image/pooled` = the mean of
`image/tokens` (global average pool), and `image/hidden/<k>` laid out like tokens.
"""
from __future__ import annotations

import torch

from msa_cache.encoders.base import Encoder, EncoderOptions, ImageSpec
from msa_cache.encoders.hub import EncoderUnavailable, load_pretrained
from msa_cache.encoders.text import check_layers

# Model types whose token 0 is a CLS token (the rest are patches).
CLS_FIRST = {"vit", "deit", "beit", "dinov2", "data2vec-vision", "vit_mae", "vit_msn", "vit_hybrid", "dpt"}
VIT_IN21K = ImageSpec(size=224, resize=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def grid_to_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C], row-major over the grid."""
    return fmap.flatten(2).transpose(1, 2)


def image_fields(states: torch.Tensor, cls_first: bool, hidden_states=None, layers=()) -> dict:
    """Standard image fields from a sequence [B, N, d] or a feature map [B, C, H, W]."""
    out = {}
    if states.ndim == 4:
        tokens = grid_to_tokens(states)
    elif cls_first:
        out["image/cls"], tokens = states[:, 0], states[:, 1:]
    else:
        tokens = states
    out["image/pooled"] = tokens.mean(1)
    out["image/tokens"] = tokens
    for k in layers:
        h = hidden_states[k]
        out[f"image/hidden/{k}"] = grid_to_tokens(h) if h.ndim == 4 else (h[:, 1:] if cls_first else h)
    return out


def _size_get(size, key):
    if size is None:
        return None
    if isinstance(size, int):
        return size if key == "shortest_edge" else None
    getter = getattr(size, "get", None)
    return getter(key) if getter is not None else getattr(size, key, None)


def image_spec_from_processor(processor, default: ImageSpec) -> ImageSpec:
    """Translate an HF image processor's settings into an ImageSpec (torchvision transforms)."""
    if processor is None:
        return default
    size, crop = getattr(processor, "size", None), getattr(processor, "crop_size", None)
    mean = tuple(getattr(processor, "image_mean", None) or default.mean)
    std = tuple(getattr(processor, "image_std", None) or default.std)
    resample = getattr(processor, "resample", None)
    if hasattr(resample, "value") and isinstance(resample.value, str):  # torchvision InterpolationMode
        interpolation = resample.value
    else:
        interpolation = _RESAMPLE.get(int(resample), default.interpolation) if resample is not None else default.interpolation
    short, height = _size_get(size, "shortest_edge"), _size_get(size, "height")
    if getattr(processor, "do_center_crop", False) and _size_get(crop, "height"):
        return ImageSpec(size=int(_size_get(crop, "height")), resize=int(short or height), mean=mean, std=std,
                         interpolation=interpolation)
    if height:
        return ImageSpec(size=int(height), resize=None, mean=mean, std=std, interpolation=interpolation)
    if short:
        return ImageSpec(size=int(short), resize=int(short), mean=mean, std=std, interpolation=interpolation)
    return default


class VisionEncoder(Encoder):
    modality = "image"

    def __init__(self, name: str, model: torch.nn.Module, image: ImageSpec, *, model_id: str,
                 revision: str | None = None, options: EncoderOptions = EncoderOptions()):
        super().__init__(name, model, model_id=model_id, revision=revision, options=options, image=image)
        config = model.config
        self.cls_first = getattr(config, "model_type", "") in CLS_FIRST
        if options.layers:
            check_layers(name, options.layers, int(config.num_hidden_layers) + 1)

    def _forward(self, batch: dict) -> dict:
        layers = self.options.layers
        out = self.model(pixel_values=batch["pixel_values"], output_hidden_states=bool(layers))
        return image_fields(out.last_hidden_state, self.cls_first, out.hidden_states, layers)

    @classmethod
    def from_pretrained(cls, name: str, source: str, *, model=None, processor=None, default: ImageSpec = VIT_IN21K,
                        options: EncoderOptions = EncoderOptions()) -> "VisionEncoder":
        from transformers import AutoImageProcessor, AutoModel

        if model is None:
            model = load_pretrained(name, source, AutoModel.from_pretrained)
            model_id, revision = source, getattr(model.config, "_commit_hash", None)
            if processor is None:
                try:
                    processor = load_pretrained(name, source, AutoImageProcessor.from_pretrained)
                except EncoderUnavailable:  # a local folder saved without preprocessor_config.json
                    processor = None
        else:
            model_id, revision = getattr(model.config, "_name_or_path", "") or "in-memory", None
        size = getattr(model.config, "image_size", None)
        if processor is None and isinstance(size, int):  # no processor: the default recipe at the model's size
            default = ImageSpec(size=size, resize=default.resize and int(size * default.resize / default.size),
                                mean=default.mean, std=default.std, interpolation=default.interpolation)
        return cls(name, model, image_spec_from_processor(processor, default), model_id=model_id,
                   revision=revision, options=options)


def vit(model=None, tokenizer=None, options: EncoderOptions = EncoderOptions(), processor=None) -> VisionEncoder:
    return VisionEncoder.from_pretrained("vit", "google/vit-base-patch16-224-in21k", model=model,
                                         processor=processor, options=options)
