"""Optimiser, learning-rate schedule and mixed precision for the staged fine-tune.

AdamW with two parameter groups: the head (lr) and the encoders (encoder_lr).
Each group warms up linearly over its first `warmup` fraction of steps, then
decays linearly to 0 at the last step; the encoder group's clock starts when the
encoders are unfrozen, so they too start gently. Frozen encoder parameters get
no gradient, and AdamW leaves parameters without a gradient untouched.
"""
from __future__ import annotations

import contextlib

import torch

from msa_cache.runs import training

MAX_GRAD_NORM = 1.0  # the usual clip for transformer fine-tuning; keeps an early bad batch harmless


def warmup_linear(total: int, warmup: float, start: int = 0):
    """lr factor per optimizer step: 0 before `start`, linear up over the warm-up (the last warm-up step at
    1), then linear down, reaching 0 just after the last step (so no step is taken at lr 0)."""
    span = max(1, total - start)
    warm = max(1, round(warmup * span)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < start:
            return 0.0
        s = step - start
        if s < warm:
            return (s + 1) / warm
        return max(0.0, (span - s) / (span - warm + 1))

    return factor


def make_optimizer(model, lr: float, encoder_lr: float, weight_decay: float, total_steps: int, warmup: float,
                   encoder_start: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups = [{"params": model.head_params(), "lr": lr}, {"params": model.encoder_params(), "lr": encoder_lr}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [warmup_linear(total_steps, warmup), warmup_linear(total_steps, warmup, encoder_start)])
    return optimizer, schedule


def resolve_precision(device: torch.device, amp: bool) -> str:
    """fp32 on CPU or without --amp; bf16 on GPUs with native bf16 (Ampere+), else fp16 with a GradScaler.

    Capability, not `torch.cuda.is_bf16_supported()`: newer torch reports emulated bf16 on
    old GPUs (a GTX 980), which is far slower than fp16 there.
    """
    if not amp or device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(precision: str):
    return training.grad_scaler(precision == "fp16")
