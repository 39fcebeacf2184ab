"""Running the model on batches: device, autocast, out-of-memory halving, storage dtypes."""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from msa_cache.cache.schema import FLOAT16_MAX, field_dtype
from msa_cache.encoders.base import Encoder

AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_autocast(autocast: str, device: torch.device) -> str:
    """auto: fp16 on CUDA (fast on every CUDA GPU incl. old ones), off on CPU (exact fp32)."""
    if autocast == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if autocast not in ("off", *AUTOCAST):
        raise ValueError(f"autocast '{autocast}': choose auto, fp16, bf16 or off")
    return autocast


def is_oom(error: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)  # torch >= 1.13
    return (oom_type is not None and isinstance(error, oom_type)) or "out of memory" in str(error).lower()


def _slice(batch: dict, a: int, b: int) -> dict:
    return {k: v[a:b] for k, v in batch.items()}


class BatchRunner:
    """`runner(batch) -> (rows, {field: array}, ok, problems)` ready to write.

    On out-of-memory (CUDA's OutOfMemoryError, or any "out of memory" RuntimeError)
    the batch is split and the batch size halved for the rest of the run (down
    to 1, then the error is raised).
    """

    def __init__(self, encoder: Encoder, device: torch.device, autocast: str, float_dtype: str,
                 batch_size: int, log: Callable[[str], None] = print):
        self.encoder, self.device, self.float_dtype, self.log = encoder, device, float_dtype, log
        self.autocast = resolve_autocast(autocast, device)
        self.batch_size = batch_size
        self.image_fields = [k for k in encoder.field_shapes() if k.startswith("image/")]

    def __call__(self, batch: dict) -> tuple[np.ndarray, dict, np.ndarray, list[str]]:
        n, parts, i = len(batch["rows"]), [], 0
        while i < n:
            size = min(self.batch_size, n - i)
            try:
                parts.append(self._forward(_slice(batch, i, i + size)))
            except RuntimeError as e:
                if not is_oom(e) or size == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.batch_size = max(1, size // 2)
                self.log(f"CUDA out of memory at batch size {size}: continuing with {self.batch_size}")
                continue
            i += size
        arrays = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return batch["rows"].numpy(), arrays, batch["ok"].numpy(), list(batch["problem"])

    def _forward(self, batch: dict) -> dict[str, np.ndarray]:
        # Model inputs plus "rows" (manifest row indices) and "ok", for encoders that want them.
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        cast = (torch.autocast(device_type=self.device.type, dtype=AUTOCAST[self.autocast])
                if self.autocast != "off" else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            out = self.encoder.forward(inputs)
        return {name: self._to_storage(name, value, inputs["ok"]) for name, value in out.items()}

    def _to_storage(self, name: str, value: torch.Tensor, ok: torch.Tensor) -> np.ndarray:
        dtype = field_dtype(name, self.float_dtype)
        if dtype == "uint8":
            return value.to(torch.uint8).cpu().numpy()
        if dtype == "int32":
            return value.to(torch.int32).cpu().numpy()
        value = value.float()
        if name in self.image_fields and not bool(ok.all()):
            # A bad image row is stored as zeros (ok=0), whatever the model made of the blank input.
            value = value * ok.view(-1, *([1] * (value.ndim - 1))).to(value.dtype)
        if dtype == "float16":
            value = value.clamp(-FLOAT16_MAX, FLOAT16_MAX).half()  # inf would poison every mean downstream
        return value.cpu().numpy()
