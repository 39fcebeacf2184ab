"""What every encoder is: its inputs (text spec, image spec), its forward, what it stores.

An `Encoder` wraps an already-built torch model, so tests and notebooks can hand
in any model (a tiny random BertModel, a fine-tuned checkpoint) and the
registry's builders only decide where the weights come from.

The input side (`TextSpec`, `ImageSpec`, `Collator`) holds no model: the
DataLoader workers get only these, so they stay cheap to fork or pickle.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from PIL import Image

from msa_cache.cache.schema import is_token_field
from msa_cache.encoders.options import EncoderOptions  # noqa: F401  (re-exported: encoders take it)
from msa_cache.manifest.text import get_cleaner

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageSpec:
    """Image preprocessing: resize, centre crop, normalise. Recorded in the cache provenance.

    resize=None squashes the image to size x size (how ViT-in21k was trained);
    otherwise the shorter side goes to `resize` and a size x size centre crop is taken.
    """

    size: int = 224
    resize: int | None = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        from torchvision import transforms as T

        mode = getattr(T.InterpolationMode, self.interpolation.upper())
        steps = [T.Resize((self.size, self.size), interpolation=mode)] if self.resize is None else [
            T.Resize(self.resize, interpolation=mode), T.CenterCrop(self.size)]
        return T.Compose(steps + [T.ToTensor(), T.Normalize(list(self.mean), list(self.std))])

    def as_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = [round(float(x), 8) for x in self.mean], [round(float(x), 8) for x in self.std]
        return {"image_" + k if k == "size" else k: v for k, v in d.items()}


@dataclass
class TextSpec:
    """Tokenisation: clean, then pad/truncate to exactly max_length tokens (fixed [L, d] rows)."""

    tokenizer: object
    max_length: int = 128
    clean: str = "none"
    tokenizer_name: str | None = None  # recorded instead of a machine-specific folder path

    def prepare(self, text: str) -> str:
        return get_cleaner(self.clean)(text)

    def tokenize(self, texts: list[str], pairs: list[str | None] | None = None) -> dict[str, torch.Tensor]:
        """pairs: a second segment per text (target-oriented data: the target), tokenised as the
        tokenizer's text_pair (`[CLS] text [SEP] pair [SEP]` for BERT); truncation trims the longer one.
        A None pair: that row is one segment."""
        enc = encode_texts(self.tokenizer, list(texts), None if pairs is None else list(pairs), padding="max_length",
                           truncation=True, max_length=self.max_length, return_tensors="pt")
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if pairs is not None and "token_type_ids" in enc:  # BERT-style segment ids mark the second segment
            out["token_type_ids"] = enc["token_type_ids"]
        return out

    def as_dict(self) -> dict:
        name = self.tokenizer_name or getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
        return {"max_length": self.max_length, "clean": self.clean, "tokenizer": str(name),
                "tokenizer_class": type(self.tokenizer).__name__}


def encode_texts(tokenizer, texts: list[str], pairs: list[str | None] | None, **kwargs) -> dict[str, torch.Tensor]:
    """`tokenizer(texts, pairs, return_tensors="pt", ...)` where a row whose pair is None is encoded as one
    segment (`[CLS] text [SEP]`), not as a pair with an empty second one (`[CLS] text [SEP] [SEP]`):
    the tokenizer takes a batch of all pairs or none, so the two kinds are encoded apart and merged."""
    if pairs is None or all(p is not None for p in pairs):
        return tokenizer(texts, pairs, **kwargs)
    paired = [i for i, p in enumerate(pairs) if p is not None]
    single = [i for i, p in enumerate(pairs) if p is None]
    groups = [(single, tokenizer([texts[i] for i in single], None, **kwargs))]
    if paired:
        groups.append((paired, tokenizer([texts[i] for i in paired], [pairs[i] for i in paired], **kwargs)))
    length = max(enc["input_ids"].shape[1] for _, enc in groups)
    fills = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0,
             "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
    out = {}
    for key, fill in fills.items():
        if not all(key in enc for _, enc in groups):
            continue
        merged = torch.full((len(texts), length), fill, dtype=groups[0][1][key].dtype)
        for rows, enc in groups:
            width = enc[key].shape[1]
            if getattr(tokenizer, "padding_side", "right") == "left":
                merged[rows, length - width:] = enc[key]
            else:
                merged[rows, :width] = enc[key]
        out[key] = merged
    return out


def text_limit(tokenizer, config) -> int | None:
    """Longest sequence the model takes (CLIP: 77), or None when unknown."""
    limits = [getattr(config, "max_position_embeddings", None)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 100_000:  # transformers uses a huge sentinel for "no limit"
        limits.append(tok_max)
    limits = [int(x) for x in limits if x]
    return min(limits) if limits else None


class Collator:
    """Turns dataset items into a batch: tokenises texts (batched, fast) and stacks pixels."""

    def __init__(self, text: TextSpec | None, image: ImageSpec | None):
        self.text, self.image = text, image

    def __call__(self, items: list[dict]) -> dict:
        batch = {
            "rows": torch.tensor([it["row"] for it in items], dtype=torch.long),
            "ok": torch.tensor([it["ok"] for it in items], dtype=torch.bool),
            "problem": [it["problem"] for it in items],
        }
        if self.text is not None:
            pairs = [it["text_pair"] for it in items] if "text_pair" in items[0] else None
            batch.update(self.text.tokenize([it["text"] for it in items], pairs))
        if self.image is not None:
            batch["pixel_values"] = torch.stack([it["pixels"] for it in items])
        return batch


class Encoder:
    """A frozen model plus how to feed it and what to keep from its outputs.

    Subclasses implement `_forward(batch) -> {field: tensor[B, ...]}` and
    `_field_shapes() -> {field: per-row shape}` for the full (token) output;
    `pooled_only` filtering and provenance are handled here. The batch holds
    the model inputs (input_ids, attention_mask / pixel_values) plus "rows"
    (manifest row indices) and "ok".
    """

    modality: str = "text"  # "text" | "image" | "both"

    def __init__(self, name: str, model: torch.nn.Module, *, model_id: str, revision: str | None = None,
                 options: EncoderOptions = EncoderOptions(), text: TextSpec | None = None,
                 image: ImageSpec | None = None, notes: dict | None = None):
        self.name, self.model, self.model_id, self.revision = name, model.eval(), model_id, revision
        self.options, self.text, self.image = options, text, image
        self.notes = dict(notes or {})  # extra provenance, e.g. why max_length was clamped
        self.source: dict = {}  # exported fine-tuned encoders: the run they came from (exported.py)
        self._weights_sha256: str | None = None
        self._probed: dict | None = None
        if options.layers and not self.supports_layers:
            raise ValueError(f"encoder '{name}' has no uniform hidden layers; --layers works with "
                             "transformer encoders (bert, roberta, deberta-v3, minilm, vit, clip, hf:...)")

    supports_layers = True
    # An image encoder's features are a function of the image file alone, so extraction encodes an
    # image shared by several rows once (extract/shared.py); False for encoders that look at the row.
    per_image = True

    # -- what is stored -------------------------------------------------------------------
    def field_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = self._field_shapes()
        if self.options.pooled_only:
            shapes = {k: v for k, v in shapes.items() if not is_token_field(k)}
        return shapes

    def _field_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-row shapes, found by running one dummy row (exact for any architecture)."""
        if self._probed is None:
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                out = self._forward({k: v.to(device) for k, v in self.dummy_batch().items()})
            self._probed = {k: tuple(v.shape[1:]) for k, v in out.items()}
        return self._probed

    def dummy_batch(self) -> dict[str, torch.Tensor]:
        batch = {}
        if self.text is not None:
            batch["input_ids"] = torch.zeros(1, self.text.max_length, dtype=torch.long)
            batch["attention_mask"] = torch.ones(1, self.text.max_length, dtype=torch.long)
        if self.image is not None:
            batch["pixel_values"] = torch.zeros(1, 3, self.image.size, self.image.size)
        return batch

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self._forward(batch)
        keep = self.field_shapes()
        return {k: v for k, v in out.items() if k in keep}

    def _forward(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- inputs and provenance --------------------------------------------------------------
    def collator(self) -> Collator:
        return Collator(self.text, self.image)

    def preprocessing(self) -> dict:
        pre: dict = {}
        if self.text is not None:
            pre.update(self.text.as_dict())
        if self.image is not None:
            pre.update(self.image.as_dict())
        pre.update(self.notes)
        return pre

    @property
    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.model)
        return self._weights_sha256

    def to(self, device) -> "Encoder":
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, model_id={self.model_id!r})"


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only; an all-padding row gives zeros instead of NaN."""
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


def zero_padding(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Pad positions carry nothing useful; zeros make that explicit for heads that ignore the mask.
    return states * mask.to(states.dtype).unsqueeze(-1)


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of the parameters and buffers, so any weight change shows up in the provenance.

    Hashing the state dict (not a file) works the same for hub models, local
    folders and models built in memory.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]
