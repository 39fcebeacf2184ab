"""Train one head on cached features and write its run directory.

    config.json          resolved spec, cache fingerprints, library versions, dims
    history.jsonl        per epoch: mean loss terms on train, metrics on dev
    metrics.json         per labeled split: accuracy, macro P/R/F1, weighted F1,
                         per-class report, confusion matrix (written last)
    predictions.parquet  id, split, label, pred, prob_<class> for EVERY row
    confusion.png        dev confusion matrix
    model.pt             state dict (load with torch.load(..., weights_only=True))

A run is built in `seed-K.tmp-<pid>/` and renamed when complete, so a killed
run leaves no half-written directory and a finished one is skipped next time.
"""
from __future__ import annotations

import copy
import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from msa_cache.device import resolve_device
from msa_cache.heads import Batch, Head, create_head, get_head
from msa_cache.manifest import Manifest, read_manifest
from msa_cache.names import check_name
from msa_cache.provenance import library_versions
from msa_cache.runs.config import RunSpec, config_hash, monitor_for, run_dir
from msa_cache.runs.rundir import build_run_dir, is_finished, load_weights, read_metrics, read_run, write_run
from msa_cache.runs.features import FeatureSet, open_features
from msa_cache.runs.folds import run_roles
from msa_cache.runs.metrics import MONITOR_KEYS, MONITORS, classification_metrics

PREDICT_BATCH = 256
# Cache provenance copied into a run's config.json, per modality (see msa_cache/finetune/record.py).
ENCODER_RECORD_KEYS = ("encoder", "modality", "model_id", "revision", "weights_sha256", "preprocessing", "layers",
                       "pooled_only", "dtype", "encoder_source")


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


def _changed_options(head: str, options: dict) -> dict:
    defaults = dataclasses.asdict(get_head(head).Config())
    return {k: v for k, v in options.items() if defaults.get(k) != v}


def plan_run(spec: RunSpec, runs_root: str | Path, features: FeatureSet) -> Path:
    """The run directory this spec maps to (used to skip finished runs). Fills the spec in place:
    every head option, and a monitor left unset (None) becomes the manifest's default, before the
    identity is hashed, so every caller (fit, another shard's read-back, tune) finds the same folder."""
    if spec.train.monitor is None:
        spec.train = dataclasses.replace(spec.train, monitor=monitor_for(spec.train, features.manifest))
    full = dataclasses.asdict(get_head(spec.head).Config())
    full.update(spec.head_options)
    spec.head_options = full
    identity = spec.identity(features.manifest.fingerprint(), features.cache_fingerprints())
    out = run_dir(runs_root, features.manifest.name, spec, config_hash(identity), _changed_options(spec.head, full))
    check_name(out.parent.name, "run folder name (from the head options)")
    return out


def fit_run(spec: RunSpec, runs_root: str | Path = "runs", features: FeatureSet | None = None,
            log: Callable[[str], None] = print,
            on_epoch_end: Callable[[int, dict], None] | None = None) -> RunResult:
    """Train `spec` unless its run directory is already finished; return its metrics.
    A monitor left unset (None) becomes the manifest's default before the run's identity is hashed (plan_run).

    on_epoch_end(epoch, record): called after each epoch with its history record (train loss terms,
    dev metrics); an exception it raises (e.g. a tuner's "prune") stops the run and leaves no run dir."""
    manifest = features.manifest if features is not None else read_manifest(spec.manifest)
    spec = dataclasses.replace(spec)  # plan_run fills it in place; the caller's spec stays as given
    if features is None:
        head_cls = get_head(spec.head)
        features = open_features(manifest, {k: Path(v) for k, v in spec.caches.items()},
                                 text_pool=spec.train.text_pool,
                                 hidden_layers=getattr(head_cls, "uses_hidden_layers", False))
    out = plan_run(spec, runs_root, features)
    if is_finished(out):
        return RunResult(out, read_metrics(out), skipped=True)

    train_rows(manifest)  # refuse before any folder is made
    t0 = time.time()
    metrics = build_run_dir(out, lambda tmp: _train_and_write(spec, manifest, features, tmp, log, on_epoch_end))
    return RunResult(out, metrics, skipped=False, seconds=time.time() - t0)


def _labels(manifest: Manifest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    labels = manifest.labels("label")
    modality = {m: manifest.labels(f"{m}_label") for m in ("text", "image")}
    return labels, {m: v for m, v in modality.items() if (v >= 0).any()}


def train_rows(manifest: Manifest) -> np.ndarray:
    """The labeled train rows; ValueError when there are none or they hold a single class."""
    labels, _ = _labels(manifest)
    idx = np.flatnonzero((np.array(manifest.column("split")) == "train") & (labels >= 0))
    if len(idx) == 0:
        raise ValueError(f"{manifest.path}: no labeled train rows; a head needs some to learn from")
    present = np.unique(labels[idx])
    if len(present) < 2:
        raise ValueError(f"{manifest.path}: every labeled train row has the class "
                         f"'{manifest.classes[int(present[0])]}'; a classifier needs at least 2 (fix the labels "
                         "or the split)")
    return idx


def _class_weight(train_labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"--class-weights must be 'none' or 'balanced', not '{mode}'")
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    # sklearn's "balanced": n_samples / (n_classes * count); absent classes get weight 0.
    w = np.where(counts > 0, len(train_labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _epoch_order(train_idx: np.ndarray, labels: np.ndarray, oversample: bool, rng: np.random.Generator) -> np.ndarray:
    if not oversample:
        return rng.permutation(train_idx)
    # Draw with replacement, each class equally likely: same epoch length, balanced classes.
    counts = np.bincount(labels[train_idx])
    p = 1.0 / counts[labels[train_idx]]
    return rng.choice(train_idx, size=len(train_idx), replace=True, p=p / p.sum())


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class _BatchDataset(torch.utils.data.Dataset):
    """One item = one whole Batch, so DataLoader workers prefetch HDF5 token reads."""

    def __init__(self, features, batches, labels, modality_labels, with_tokens):
        self.features, self.batches = features, batches
        self.labels, self.modality_labels, self.with_tokens = labels, modality_labels, with_tokens

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, k):
        return self.features.batch(self.batches[k], self.labels, self.modality_labels, self.with_tokens)


def _identity(batch):
    return batch


def _loader(features, batches, labels, modality_labels, head, workers):
    ds = _BatchDataset(features, batches, labels, modality_labels, head.uses_tokens)
    return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                                       collate_fn=_identity)


@torch.no_grad()
def predict_probs(head: Head, features: FeatureSet, idx: np.ndarray, device: torch.device,
                  workers: int = 0, amp: bool = False) -> np.ndarray:
    head.eval()
    labels, modality_labels = _labels(features.manifest)
    out = []
    for batch in _loader(features, _batches(idx, PREDICT_BATCH), labels, modality_labels, head, workers):
        with _autocast(device, amp), head.logits_only():
            logits = head(batch.to(device)).logits
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, head.num_classes), dtype=np.float32)


def _autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def _make_optimizer(head: Head, spec: RunSpec) -> torch.optim.Optimizer:
    kind = spec.train.optimizer or head.optimizer
    lr = spec.train.lr if spec.train.lr is not None else 1e-3
    params = [p for p in head.parameters() if p.requires_grad]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=spec.train.weight_decay or 0.0)
    if kind == "adamw":
        wd = spec.train.weight_decay if spec.train.weight_decay is not None else 0.01
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer '{kind}'; use adam or adamw")


def _grad_scaler(enabled: bool):
    # torch.amp.GradScaler is new (2.3+); older CUDA builds only have torch.cuda.amp's.
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def _train_and_write(spec: RunSpec, manifest: Manifest, features: FeatureSet, out: Path, log,
                     on_epoch_end=None) -> dict:
    tc = spec.train
    if tc.monitor not in MONITORS:
        raise ValueError(f"--monitor must be one of {sorted(MONITORS)}")
    seed_everything(spec.seed)
    device = resolve_device(tc.device)
    labels, modality_labels = _labels(manifest)
    roles = run_roles(np.array(manifest.column("split")), labels, spec.cv_folds, spec.cv_fold, spec.cv_seed,
                      refit=spec.refit is not None)
    train_idx = np.flatnonzero((roles == "train") & (labels >= 0))
    dev_idx = np.flatnonzero((roles == "dev") & (labels >= 0))
    if len(train_idx) == 0:
        raise ValueError(f"{manifest.path}: no labeled train rows; a head needs some to learn from")
    classes = manifest.classes
    spec_dims = features.spec()
    head = create_head(spec.head, spec_dims, len(classes), spec.head_options).to(device)
    class_weight = _class_weight(labels[train_idx], len(classes), tc.class_weights)
    monitor = MONITORS[tc.monitor]
    history: list[dict] = []

    if getattr(head, "fit_mode", None) == "closed_form":
        features.load_pooled()
        x = lambda idx: {m: features.pooled[m][idx].float().numpy() for m in head.spec}  # noqa: E731
        if spec.refit is not None:  # refit: the C the folds chose, nothing left to pick on
            head.grid = [_refit_value(spec, "C")]
            dev_idx = train_idx
        info = head.fit_closed_form(x(train_idx), labels[train_idx], x(dev_idx), labels[dev_idx], monitor,
                                    class_weight=None if class_weight is None else class_weight.numpy(),
                                    seed=spec.seed)
        history.append({"epoch": 0, **{k: v for k, v in info.items()}})
        head.to(device)
    else:
        loop_spec = spec
        if spec.refit is not None:  # no dev rows: the loop runs the folds' epoch count and keeps the last
            loop_spec = dataclasses.replace(spec, train=dataclasses.replace(tc, max_epochs=int(_refit_value(spec, "epochs"))))
        history = _train_loop(head, loop_spec, features, train_idx, dev_idx, labels, modality_labels,
                              class_weight, monitor, device, log, on_epoch_end)

    # Predict every row (unlabeled ones too) with the selected model.
    probs = predict_probs(head, features, np.arange(len(manifest)), device, tc.workers, tc.amp)
    config = {
        "spec": spec.to_dict(),
        "manifest_fingerprint": manifest.fingerprint(),
        "caches": features.cache_fingerprints(),
        # What `msa-cache predict` needs to rebuild each encoder (name, weights hash, max_length, cleaning).
        "encoders": {name: {k: src.cache.attrs.get(k) for k in ENCODER_RECORD_KEYS}
                     for name, src in features.sources.items()},
        "modalities": {k: dataclasses.asdict(v) for k, v in spec_dims.items()},
        "classes": classes,
        "num_parameters": sum(p.numel() for p in head.parameters()),
        "device": str(device),
        "versions": library_versions(),
    }
    return write_run(out, manifest, probs, head.state_dict(), history, config, f"{spec.head} seed {spec.seed}: dev",
                     splits=roles)


def _refit_value(spec: RunSpec, key: str):
    if key not in spec.refit:
        raise ValueError(f"refit of a '{spec.head}' run needs '{key}' from the folds, got {spec.refit}")
    return spec.refit[key]


def _train_loop(head, spec, features, train_idx, dev_idx, labels, modality_labels, class_weight, monitor,
                device, log, on_epoch_end=None) -> list[dict]:
    tc = spec.train
    optimizer = _make_optimizer(head, spec)
    use_amp = device.type == "cuda" and tc.amp
    scaler = _grad_scaler(use_amp)
    if class_weight is not None:
        class_weight = class_weight.to(device)
    rng = np.random.default_rng(spec.seed)
    best_score, best_state, best_epoch, history = -np.inf, None, 0, []
    for epoch in range(1, tc.max_epochs + 1):
        head.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        n_batches = 0
        order = _epoch_order(train_idx, labels, tc.oversample, rng)
        for batch in _loader(features, _batches(order, tc.batch_size), labels, modality_labels, head, tc.workers):
            loss, terms = train_step(head, batch.to(device), optimizer, scaler, device, use_amp, class_weight)
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_batches += 1
        record = {"epoch": epoch, "seconds": round(time.time() - t0, 3),
                  **{f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()}}
        if len(dev_idx):
            probs = predict_probs(head, features, dev_idx, device, tc.workers, tc.amp)
            m = classification_metrics(labels[dev_idx], probs.argmax(1), features.manifest.classes)
            record.update({f"dev_{k}": m[k] for k in ("accuracy", "macro_f1", "weighted_f1")})
            score = record[f"dev_{MONITOR_KEYS[tc.monitor]}"]
        else:  # no labeled dev rows: no early stopping, keep the last epoch
            score = epoch
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in head.state_dict().items()})
        elif epoch - best_epoch >= tc.patience:
            break
    head.load_state_dict(best_state)
    history.append({"best_epoch": best_epoch, "best_dev_score": best_score, "monitor": tc.monitor})
    return history


def train_step(head: Head, batch: Batch, optimizer: torch.optim.Optimizer, scaler, device: torch.device,
               use_amp: bool, class_weight: torch.Tensor | None = None) -> tuple[float, dict]:
    """One optimizer step on one batch (autocast and loss scaling on CUDA with AMP); the loss and its terms."""
    with _autocast(device, use_amp):
        out = head(batch)
        loss, terms = head.loss(out, batch, class_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    head.optimizer_stepped()
    return float(loss.detach()), terms


def load_run(path: str | Path) -> tuple[Head, dict]:
    """Rebuild a finished run's head (eval mode, CPU) and its config.json.

    The run directory is validated first (rundir.read_run), so a tampered or foreign folder is
    refused in one line before anything is built. A fine-tune run (config "mode": "finetune")
    gives its whole model instead (a `FinetuneModule`: encoders + head, raw inputs in), since
    its head only fits the fine-tuned encoders."""
    from msa_cache.heads.base import ModalitySpec

    path = Path(path)
    config = read_run(path)
    if config.get("mode") == "finetune":  # encoders + head: rebuilt from the recorded encoders
        from msa_cache.finetune.load import load_finetune_run

        return load_finetune_run(path, config)
    spec = {k: ModalitySpec(**v) for k, v in config["modalities"].items()}
    s = config["spec"]
    head = create_head(s["head"], spec, len(config["classes"]), s["head_options"])
    load_weights(path, head)
    return head.eval(), config
