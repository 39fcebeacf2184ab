"""What every training mode shares: the epoch loop, seeding, labels, class weights, mixed precision.

fit (fit/trainer.py), finetune (finetune/train.py), tune and the benches all train
through `train_epochs`; a mode passes only its own `train_epoch` (one pass over the
train rows: its step function, batching, staging) and `evaluate` (its predict
function, scored on dev). Early stopping, the per-epoch history, the best-epoch
checkpoint and the epoch hooks (a tuner's pruner, a progress line) live here once.
"""
from __future__ import annotations

import contextlib
import random
import time
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from msa_cache.manifest import Manifest
from msa_cache.train.rundir import RunResult  # noqa: F401  (re-exported: the trainers return it)
from msa_cache.metrics import METRIC_KEYS, dev_metrics, monitor_metric

EpochHook = Callable[[int, dict], None]
LIMIT_SEED = 0  # a train-row limit draws the same subset for every seed, so seeds stay comparable


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


def train_rows(manifest: Manifest, limit: int | None = None) -> np.ndarray:
    """The labeled train rows (a fixed random subset of `limit` of them, finetune's --limit-train);
    ValueError when there are none or they hold a single class."""
    labels, _ = manifest_labels(manifest)
    rows = np.flatnonzero((np.array(manifest.column("split")) == "train") & (labels >= 0))
    if len(rows) == 0:
        raise ValueError(f"{manifest.path}: no labeled train rows; a head needs some to learn from")
    limited = limit is not None and limit < len(rows)
    if limited:
        rows = np.sort(np.random.default_rng(LIMIT_SEED).choice(rows, size=limit, replace=False))
    present = np.unique(labels[rows])
    if len(present) < 2:
        raise ValueError(f"{manifest.path}: every labeled train row{' drawn' if limited else ''} has the class "
                         f"'{manifest.classes[int(present[0])]}'; a classifier needs at least 2 (fix the labels "
                         f"or the split{', or raise --limit-train' if limited else ''})")
    return rows


@torch.no_grad()
def class_probs(batches: Iterable, logits: Callable[[object], torch.Tensor], num_classes: int) -> np.ndarray:
    """Softmax probabilities [rows, C] of a model over its eval batches, in order; `logits(batch)` runs the
    model (under the mode's autocast). The one predict loop of both modes and of `predict`."""
    out = [torch.softmax(logits(batch).float(), dim=-1).cpu().numpy() for batch in batches]
    return np.concatenate(out) if out else np.zeros((0, num_classes), dtype=np.float32)


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


def resolve_precision(device: torch.device, amp: bool, bf16: bool = True) -> str:
    """The precision a run trains and predicts in: fp32 on CPU or without --amp; on CUDA bf16 where the
    GPU has it natively (Ampere+) and the mode takes it (`bf16`: finetune does, fit keeps fp16), else
    fp16 with a GradScaler.

    Capability, not `torch.cuda.is_bf16_supported()`: newer torch reports emulated bf16 on
    old GPUs (a GTX 980), which is far slower than fp16 there.
    """
    if not amp or device.type != "cuda":
        return "fp32"
    if not bf16:
        return "fp16"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


def autocast(device: torch.device, precision: str):
    """Autocast to `precision` ("fp16", "bf16"); a no-op for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(precision: str | bool):
    """A GradScaler, enabled for fp16 (`precision` "fp16", or True where a caller says whether fp16 is on)."""
    enabled = precision == "fp16" if isinstance(precision, str) else bool(precision)
    # torch.amp.GradScaler is new (2.3+); older CUDA builds only have torch.cuda.amp's.
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def amp_autocast(device: torch.device, amp: bool):
    """fit's autocast: fp16 on CUDA with AMP on; a no-op otherwise."""
    return autocast(device, resolve_precision(device, amp, bf16=False))


def add_terms(sums: dict[str, float], loss: float, terms: dict) -> None:
    """Accumulate one batch's loss and loss terms (the epoch record holds their means)."""
    for k, v in {"loss": loss, **terms}.items():
        sums[k] = sums.get(k, 0.0) + float(v)


def dev_scores(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """The dev fields of an epoch record: dev_accuracy, dev_macro_f1, dev_weighted_f1 and dev_loss (the
    mean cross-entropy of the dev probabilities, without class weights, so runs compare on one scale)."""
    m = dev_metrics(labels, probs.argmax(1), len(classes))
    # clipped: a probability that underflows to 0 gives a large finite loss, not inf
    picked = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-12, None)
    return {**{f"dev_{k}": m[k] for k in METRIC_KEYS}, "dev_loss": float(-np.log(picked).mean())}


def stop_reason(epoch: int, best_epoch: int, max_epochs: int, has_dev: bool) -> str:
    """Why an epoch loop ended at `epoch`, and the epoch it kept: the progress lines' last words."""
    if epoch < max_epochs:
        why = f"no improvement for {epoch - best_epoch} epoch(s)"
    else:
        why = f"reached --max-epochs {max_epochs}"
    kept = f"kept epoch {best_epoch}" if has_dev else f"kept the last epoch ({best_epoch}; no labeled dev rows)"
    return f"{why}; {kept}"


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
        self.max_epochs, self.key, self.log, self.prefix = max_epochs, monitor_metric(monitor).dev_key, log, prefix
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

    def finished(self, reason: str) -> None:
        """The end of training: why it stopped and the epoch it kept (see stop_reason)."""
        self.log(f"{self.prefix}stopped: {reason}")


def train_epochs(model: torch.nn.Module, max_epochs: int, patience: int, monitor: str,
                 train_epoch: Callable[[int], dict], evaluate: Callable[[], dict | None],
                 on_epoch_end: EpochHook | Iterable[EpochHook] | None = None) -> list[dict]:
    """Train up to `max_epochs`, stop after `patience` epochs without a better dev score, restore the best.

    train_epoch(epoch): one pass over the train rows; returns its record fields (seconds, train_* means, ...).
    evaluate(): the dev fields (at least dev_<monitor key>, see dev_scores), or None when there are no
    labeled dev rows; then there is no early stopping and the last epoch is kept.
    on_epoch_end: hook(s) called with (epoch, record) after the record joins the history; a hook may add
    fields to the record (they are written), and an exception it raises (e.g. a tuner's "prune") stops
    the run. A hook with a `finished(reason)` method (EpochProgress) is told why training stopped.

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
            score = record[monitor_metric(monitor).dev_key]
        history.append(record)
        for hook in hooks:
            hook(epoch, record)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    reason = stop_reason(epoch, best_epoch, max_epochs, has_dev=dev is not None)
    for hook in hooks:
        if callable(getattr(hook, "finished", None)):
            hook.finished(reason)
    model.load_state_dict(best_state)
    history.append({"best_epoch": best_epoch, "best_dev_score": best_score, "monitor": monitor})
    return history
