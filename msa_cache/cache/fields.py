"""Which cache fields a head reads, per modality: the one place this is decided.

A cache (or an encoder's forward in fine-tune mode) holds fields such as
"text/cls", "text/mean", "text/tokens", "text/mask", "image/pooled", "image/tokens",
"text/hidden/-2". A head sees modalities, each (pooled, tokens, mask):

    role "text"   -> "text":  pooled = text/<text_pool> (else text/pooled, else text/cls), tokens, mask
    role "image"  -> "image": pooled = image/pooled (the mean of the tokens), tokens (patches / grid), no mask;
                     with image_pool="cls" (a head that wants the visual [CLS], `Head.image_pool`):
                     image/cls where the encoder has one (ViT), else image/pooled (a CNN has none)
    role "clip"   -> "clip_text" (pooled = text/pooled, the projected CLIP embedding), "clip_image"
    hidden layers -> "text@-2", "image@-3", ...: the base modality's pooled and mask, tokens of layer -k
                     (only with hidden_layers=True; never for CLIP)

Used by fit/features.py (cached runs), finetune/model.py (fine-tune runs); the choice is
recorded in a run's config.json ("fields"), which is what `predict` replays.
"""
from __future__ import annotations

from typing import Iterable

Fields = tuple[str, str | None, str | None]  # (pooled, tokens, mask) field names of one modality


def head_fields(role: str, fields: Iterable[str], text_pool: str = "cls",
                hidden_layers: bool = True, image_pool: str = "pooled") -> dict[str, Fields]:
    """modality -> (pooled, tokens, mask) for one cache or encoder of `role` ("text", "image", "clip").
    Hidden layers come in the order `fields` lists them."""
    fields = list(fields)
    present = set(fields)

    def text(pool: str) -> Fields:
        pooled = next((f for f in (f"text/{pool}", "text/pooled") if f in present), "text/cls")
        return (pooled, "text/tokens" if "text/tokens" in present else None,
                "text/mask" if "text/mask" in present else None)

    if image_pool not in ("pooled", "cls"):
        raise ValueError(f"unknown image pool '{image_pool}'; use pooled or cls")
    image_pooled = "image/cls" if image_pool == "cls" and "image/cls" in present else "image/pooled"
    image: Fields = (image_pooled, "image/tokens" if "image/tokens" in present else None, None)
    if role == "clip":
        return {"clip_text": text("pooled"), "clip_image": image}
    if role not in ("text", "image"):
        raise ValueError(f"unknown cache role '{role}'; use text, image or clip")
    base = text(text_pool) if role == "text" else image
    out = {role: base}
    if hidden_layers:
        for f in fields:  # "text/hidden/-2" -> "text@-2"
            if f.startswith(f"{role}/hidden/"):
                out[f"{role}@{f.rsplit('/', 1)[1]}"] = (base[0], f, base[2])
    return out


def recorded_image_pool(config: dict) -> str:
    """The image_pool a finished run was trained with, from its config.json ("fields", else the caches'
    recorded fields): "cls" when it read image/cls, else "pooled" (every run made before image_pool)."""
    pooled = [f.get("pooled") for f in (config.get("fields") or {}).values() if isinstance(f, dict)]
    pooled += [(c.get("fields") or [None])[0] for c in (config.get("caches") or {}).values() if isinstance(c, dict)]
    return "cls" if "image/cls" in pooled else "pooled"


def fields_record(fields: dict[str, Fields]) -> dict[str, dict]:
    """As config.json records them: {modality: {"pooled", "tokens", "mask"}}."""
    return {m: {"pooled": p, "tokens": t, "mask": k} for m, (p, t, k) in fields.items()}
