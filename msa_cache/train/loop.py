"""What every training mode shares: the epoch loop, seeding, labels, class weights, mixed precision.

fit (fit/trainer.py), finetune (finetune/train.py), tune and the benches all train
through `train_epochs`; a mode passes only its own `train_epoch` (one pass over the
train rows: its step function, batching, staging) and `evaluate` (its predict
function, scored on dev). Early stopping, the per-epoch history, the best-epoch
checkpoint and the epoch hooks (a tuner's pruner, a progress line) live here once.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from msa_cache.manifest import Manifest
from msa_cache.train.metrics import MONITOR_KEYS, dev_metrics

DEV_METRICS = ("accuracy", "macro_f1", "weighted_f1")

EpochHook = Callable[[int, dict], None]


@dataclass
class RunResult:
    path: Path
    metrics: dict
    skipped: bool
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def manifest_labels(manifest: Manifest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The sentiment label per row (-1: none) and the per-modality labels that have any."""
    labels = manifest.labels("label")
    modality = {m: manifest.labels(f"{m}_label") for m in ("text", "image")}
    return labels, {m: v for m, v in modality.items() if (v >= 0).any()}


def class_weight_for(train_labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """Loss weights per class for --class-weights: None for 'none', sklearn's 'balanced' otherwise."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"--class-weights must be 'none' or 'balanced', not '{mode}'")
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    # sklearn's "balanced": n_samples / (n_classes * count); absent classes get weight 0.
    w = np.where(counts > 0, len(train_labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def grad_scaler(enabled: bool):
    # torch.amp.GradScaler is new (2.3+); older CUDA builds only have torch.cuda.amp's.
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def amp_autocast(device: torch.device, amp: bool):
    """fp16 autocast on CUDA with AMP on; a no-op otherwise."""
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def add_terms(sums: dict[str, float], loss: float, terms: dict) -> None:
    """Accumulate one batch's loss and loss terms (the epoch record holds their means)."""
    for k, v in {"loss": loss, **terms}.items():
        sums[k] = sums.get(k, 0.0) + float(v)


def dev_scores(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """The dev fields of an epoch record: dev_accuracy, dev_macro_f1, dev_weighted_f1."""
    m = dev_metrics(labels, probs.argmax(1), len(classes))
    return {f"dev_{k}": m[k] for k in DEV_METRICS}


def format_duration(seconds: float) -> str:
    """1m05s, 2h03m: the ETAs of the progress lines."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def batch_bar(batches: Iterable, total: int, epoch: int, max_epochs: int) -> tqdm:
    """A tqdm bar over one epoch's batches, on a terminal only: disable=None turns it off where stderr
    is not a TTY (logs, pipes, captured output stay clean). Cleared at the epoch's end (leave=False),
    where the epoch's progress line follows. `bar.disable` tells a loop whether it is shown."""
    return tqdm(batches, total=total, desc=f"epoch {epoch}/{max_epochs}", unit="batch", leave=False, disable=None,
                dynamic_ncols=True)


class EpochProgress:
    """An epoch hook printing one line per epoch: train loss, the dev monitor, the epoch's seconds,
    the best so far and an ETA from the mean epoch time and the epochs left (an upper bound: early
    stopping may end the run sooner). details(record): a mode's own fields, appended to the line."""

    def __init__(self, max_epochs: int, monitor: str, log: Callable[[str], None], prefix: str = "",
                 details: Callable[[dict], str] | None = None):
        self.max_epochs, self.key, self.log, self.prefix = max_epochs, f"dev_{MONITOR_KEYS[monitor]}", log, prefix
        self.details = details
        self.best: tuple[float, int] | None = None
        self.start = self.last = time.time()

    def __call__(self, epoch: int, record: dict) -> None:
        now = time.time()
        seconds, self.last = now - self.last, now
        parts = [f"{self.prefix}epoch {epoch}/{self.max_epochs}", f"train loss {record.get('train_loss', float('nan')):.4f}"]
        score = record.get(self.key)
        if score is not None:
            if self.best is None or score > self.best[0]:
                self.best = (score, epoch)
            parts.append(f"{self.key} {score:.4f} (best {self.best[0]:.4f} @ epoch {self.best[1]})")
        left = self.max_epochs - epoch
        eta = (now - self.start) / epoch * left
        parts += [f"{seconds:.1f}s", f"ETA {format_duration(eta)} ({left} epoch(s) left at most)"]
        if self.details is not None:
            parts.append(self.details(record))
        self.log(", ".join(parts))


def train_epochs(model: torch.nn.Module, max_epochs: int, patience: int, monitor: str,
                 train_epoch: Callable[[int], dict], evaluate: Callable[[], dict | None],
                 on_epoch_end: EpochHook | Iterable[EpochHook] | None = None) -> list[dict]:
    """Train up to `max_epochs`, stop after `patience` epochs without a better dev score, restore the best.

    train_epoch(epoch): one pass over the train rows; returns its record fields (seconds, train_* means, ...).
    evaluate(): the dev fields (at least dev_<monitor key>, see dev_scores), or None when there are no
    labeled dev rows; then there is no early stopping and the last epoch is kept.
    on_epoch_end: hook(s) called with (epoch, record) after the record joins the history; a hook may add
    fields to the record (they are written), and an exception it raises (e.g. a tuner's "prune") stops
    the run.

    Returns the history: one record per epoch, then {"best_epoch", "best_dev_score", "monitor"}.
    """
    hooks = [] if on_epoch_end is None else [on_epoch_end] if callable(on_epoch_end) else list(on_epoch_end)
    best_score, best_state, best_epoch, history = -np.inf, None, 0, []
    for epoch in range(1, max_epochs + 1):
        record = {"epoch": epoch, **train_epoch(epoch)}
        dev = evaluate()
        if dev is None:  # no labeled dev rows: no early stopping, keep the last epoch
            score = epoch
        else:
            record.update(dev)
            score = record[f"dev_{MONITOR_KEYS[monitor]}"]
        history.append(record)
        for hook in hooks:
            hook(epoch, record)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    history.append({"best_epoch": best_epoch, "best_dev_score": best_score, "monitor": monitor})
    return history
