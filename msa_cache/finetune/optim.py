"""Optimiser and learning-rate schedule for the staged fine-tune (mixed precision: train/loop.py).

AdamW with two parameter groups: the head (lr) and the encoders (encoder_lr).
Each group follows transformers' `get_linear_schedule_with_warmup` over its own
steps: linear warm-up from 0 over its first `warmup` fraction, then linear decay
to 0 at its end. The encoder group's clock starts when the encoders are unfrozen,
so they too start gently. Frozen encoder parameters get no gradient, and AdamW
leaves parameters without a gradient untouched.
"""
from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup

# The precision helpers are the shared loop's (both modes); imported here too for bench/gpu_check.py.
from msa_cache.train.loop import autocast, grad_scaler, resolve_precision  # noqa: F401

MAX_GRAD_NORM = 1.0  # the usual clip for transformer fine-tuning; keeps an early bad batch harmless
# warmup_linear is finetune/config.py's LR_SCHEDULE, part of a fine-tune run's identity: runs made with another
# schedule (before this one: a hand-written warm-up one step ahead of transformers', (s+1)/warm) are never
# reused as if made with this one.


def warmup_linear(total: int, warmup: float, start: int = 0):
    """lr factor per optimizer step: 0 before `start`, then transformers' linear warm-up and decay over the
    `total - start` steps left (warm-up: round(warmup * steps), at least 1 when warmup > 0; at its first
    step the factor is 0, as in transformers; warmup 0: the full lr at once, decaying to 0 at `total`)."""
    span = max(1, total - start)
    warm = max(1, round(warmup * span)) if warmup > 0 else 0
    # transformers builds a LambdaLR for one optimizer; its lambda is public (lr_lambdas), so build it on a
    # throwaway optimizer and shift it to this group's clock (one LambdaLR then holds one lambda per group).
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    linear = get_linear_schedule_with_warmup(dummy, warm, span).lr_lambdas[0]

    def factor(step: int) -> float:
        return 0.0 if step < start else float(linear(step - start))

    return factor


def make_optimizer(model, lr: float, encoder_lr: float, weight_decay: float, total_steps: int, warmup: float,
                   encoder_start: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups = [{"params": model.head_params(), "lr": lr}, {"params": model.encoder_params(), "lr": encoder_lr}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [warmup_linear(total_steps, warmup), warmup_linear(total_steps, warmup, encoder_start)])
    return optimizer, schedule


