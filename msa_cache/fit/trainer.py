"""Train one head on cached features and write its run directory.

    config.json          resolved spec, cache fingerprints, library versions, dims, runs root
    command.yaml         the `msa-cache fit --config` options that reproduce the run (train/command.py)
    history.jsonl        per epoch: mean loss terms on train, metrics on dev
    metrics.json         per labeled split: accuracy, macro P/R/F1, weighted F1,
                         per-class report, confusion matrix (written last)
    predictions.parquet  id, split, label, pred, prob_<class> for EVERY row
    confusion.png        dev confusion matrix
    model.safetensors    state dict (safetensors.torch.load_file; runs made before it have model.pt)

A run is built in `seed-K.tmp-<pid>/` and renamed when complete, so a killed
run leaves no half-written directory and a finished one is skipped next time.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from msa_cache.device import resolve_device
from msa_cache.heads import Batch, Head, create_head, get_head
from msa_cache.manifest import Manifest, read_manifest
from msa_cache.names import check_name
from msa_cache.provenance import library_versions
from msa_cache.train.command import command_options
from msa_cache.fit.config import RunSpec, run_dir
from msa_cache.train.identity import config_hash
from msa_cache.train.card import head_record
from msa_cache.train.rundir import append_history, build_run_dir, is_finished, load_weights, read_metrics, write_run
from msa_cache.fit.features import FeatureSet, open_features
from msa_cache.fit.folds import run_roles
from msa_cache.train.metrics import MONITORS
from msa_cache.train.tensorboard_log import history_events, run_events
from msa_cache.train.loop import (
    EpochHook, EpochProgress, RunResult, add_terms, amp_autocast, batch_bar, class_weight_for, dev_scores, grad_scaler,
    manifest_labels, seed_everything, train_epochs,
)

PREDICT_BATCH = 256
# Cache provenance copied into a run's config.json, per modality (see msa_cache/finetune/record.py).
ENCODER_RECORD_KEYS = ("encoder", "modality", "model_id", "revision", "weights_sha256", "preprocessing", "layers",
                       "pooled_only", "dtype", "encoder_source")


def _changed_options(head: str, options: dict) -> dict:
    defaults = dataclasses.asdict(get_head(head).Config())
    return {k: v for k, v in options.items() if defaults.get(k) != v}


def resolve_run(spec: RunSpec, runs_root: str | Path, features: FeatureSet) -> tuple[RunSpec, Path]:
    """The resolved spec (RunSpec.resolved: every head option, the manifest's default monitor where
    none is set) and the run directory it maps to. The identity is hashed from the resolved spec, so
    every caller (fit, another shard's read-back, tune) finds the same folder; `spec` is not changed."""
    spec = spec.resolved(features.manifest)
    identity = spec.identity(features.manifest.fingerprint(), features.cache_fingerprints())
    out = run_dir(runs_root, features.manifest.name, spec, config_hash(identity),
                  _changed_options(spec.head, spec.head_options))
    check_name(out.parent.name, "run folder name (from the head options)")
    return spec, out


def plan_run(spec: RunSpec, runs_root: str | Path, features: FeatureSet) -> Path:
    """The run directory this spec maps to (used to skip finished runs); see resolve_run."""
    return resolve_run(spec, runs_root, features)[1]


def fit_run(spec: RunSpec, runs_root: str | Path = "runs", features: FeatureSet | None = None,
            log: Callable[[str], None] = print,
            on_epoch_end: Callable[[int, dict], None] | None = None,
            progress: Callable[[str], None] | None = None, tensorboard: bool = False) -> RunResult:
    """Train `spec` unless its run directory is already finished; return its metrics.
    A monitor left unset (None) becomes the manifest's default before the run's identity is hashed (resolve_run).

    on_epoch_end(epoch, record): called after each epoch with its history record (train loss terms,
    dev metrics); an exception it raises (e.g. a tuner's "prune") stops the run and leaves no run dir.
    progress: where one line per epoch goes (train loss, dev monitor, seconds, best so far, ETA); None: nowhere.
    Either way each epoch's record is appended to history.jsonl in the run's tmp folder as it ends.
    tensorboard: also write the epochs as TensorBoard events in <run>/tensorboard (train/tensorboard_log.py);
    a finished run gets them from its history.jsonl. Not part of the identity: it changes no result."""
    manifest = features.manifest if features is not None else read_manifest(spec.manifest)
    if features is None:
        features = open_features(manifest, {k: Path(v) for k, v in spec.caches.items()},
                                 text_pool=spec.train.text_pool,
                                 hidden_layers=get_head(spec.head).uses_hidden_layers,
                                 image_pool=get_head(spec.head).image_pool(spec.head_options))
    spec, out = resolve_run(spec, runs_root, features)
    if is_finished(out):
        if tensorboard:
            history_events(out)
        return RunResult(out, read_metrics(out), skipped=True)

    train_rows(manifest)  # refuse before any folder is made
    command_options({"spec": spec.to_dict()})  # a spec no command can say (see command.py) fails now, not after training
    t0 = time.time()
    hooks = [] if on_epoch_end is None else [on_epoch_end]
    if progress is not None:
        hooks.append(EpochProgress(spec.train.max_epochs, spec.train.monitor, progress))

    def work(tmp: Path) -> dict:
        with run_events(tmp, tensorboard) as events:
            return _train_and_write(spec, manifest, features, tmp, log,
                                    [*hooks, lambda _, record: append_history(tmp, record),
                                     *([events] if events else [])], runs_root=runs_root)

    metrics = build_run_dir(out, work)
    return RunResult(out, metrics, skipped=False, seconds=time.time() - t0)


def train_rows(manifest: Manifest) -> np.ndarray:
    """The labeled train rows; ValueError when there are none or they hold a single class."""
    labels, _ = manifest_labels(manifest)
    idx = np.flatnonzero((np.array(manifest.column("split")) == "train") & (labels >= 0))
    if len(idx) == 0:
        raise ValueError(f"{manifest.path}: no labeled train rows; a head needs some to learn from")
    present = np.unique(labels[idx])
    if len(present) < 2:
        raise ValueError(f"{manifest.path}: every labeled train row has the class "
                         f"'{manifest.classes[int(present[0])]}'; a classifier needs at least 2 (fix the labels "
                         "or the split)")
    return idx


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
    labels, modality_labels = manifest_labels(features.manifest)
    out = []
    for batch in _loader(features, _batches(idx, PREDICT_BATCH), labels, modality_labels, head, workers):
        with amp_autocast(device, amp), head.logits_only():
            logits = head(batch.to(device)).logits
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, head.num_classes), dtype=np.float32)


def make_optimizer(head: Head, spec: RunSpec) -> torch.optim.Optimizer:
    kind = spec.train.optimizer or head.optimizer
    lr = spec.train.lr if spec.train.lr is not None else 1e-3
    params = [p for p in head.parameters() if p.requires_grad]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=spec.train.weight_decay or 0.0)
    if kind == "adamw":
        wd = spec.train.weight_decay if spec.train.weight_decay is not None else 0.01
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer '{kind}'; use adam or adamw")


def _train_and_write(spec: RunSpec, manifest: Manifest, features: FeatureSet, out: Path, log,
                     on_epoch_end=None, runs_root: str | Path = "runs") -> dict:
    tc = spec.train
    if tc.monitor not in MONITORS:
        raise ValueError(f"--monitor must be one of {sorted(MONITORS)}")
    seed_everything(spec.seed)
    device = resolve_device(tc.device)
    labels, modality_labels = manifest_labels(manifest)
    roles = run_roles(np.array(manifest.column("split")), labels, spec.cv_folds, spec.cv_fold, spec.cv_seed,
                      refit=spec.refit is not None)
    train_idx = np.flatnonzero((roles == "train") & (labels >= 0))
    dev_idx = np.flatnonzero((roles == "dev") & (labels >= 0))
    if len(train_idx) == 0:
        raise ValueError(f"{manifest.path}: no labeled train rows; a head needs some to learn from")
    classes = manifest.classes
    spec_dims = features.spec()
    head = create_head(spec.head, spec_dims, len(classes), spec.head_options).to(device)
    class_weight = class_weight_for(labels[train_idx], len(classes), tc.class_weights)
    monitor = MONITORS[tc.monitor]
    history: list[dict] = []

    if head.fit_mode == "closed_form":
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
        history = train_loop(head, loop_spec, features, train_idx, dev_idx, labels, modality_labels,
                             class_weight, device, on_epoch_end)

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
        "fields": features.fields_record(),  # which cache fields each modality read; predict replays them
        "classes": classes,
        "num_parameters": sum(p.numel() for p in head.parameters()),
        "device": str(device),
        "versions": library_versions(),
        "runs": str(runs_root),  # where it was written (command.yaml's --runs)
        **head_record(head, features.fields_record()),
    }
    return write_run(out, manifest, probs, head.state_dict(), history, config, f"{spec.head} seed {spec.seed}: dev",
                     splits=roles)


def _refit_value(spec: RunSpec, key: str):
    if key not in spec.refit:
        raise ValueError(f"refit of a '{spec.head}' run needs '{key}' from the folds, got {spec.refit}")
    return spec.refit[key]


def train_loop(head: Head, spec: RunSpec, features: FeatureSet, train_idx: np.ndarray, dev_idx: np.ndarray,
               labels: np.ndarray, modality_labels: dict, class_weight: torch.Tensor | None, device: torch.device,
               on_epoch_end: EpochHook | list[EpochHook] | None = None) -> list[dict]:
    """fit's epochs through the shared loop (training.train_epochs): its step is `train_step` on cached
    feature batches, its predict function `predict_probs`. Returns the history."""
    tc = spec.train
    optimizer = make_optimizer(head, spec)
    use_amp = device.type == "cuda" and tc.amp
    scaler = grad_scaler(use_amp)
    if class_weight is not None:
        class_weight = class_weight.to(device)
    rng = np.random.default_rng(spec.seed)

    def train_epoch(epoch: int) -> dict:
        head.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        n_batches = 0
        batches = _batches(_epoch_order(train_idx, labels, tc.oversample, rng), tc.batch_size)
        loader = _loader(features, batches, labels, modality_labels, head, tc.workers)
        with batch_bar(loader, len(batches), epoch, tc.max_epochs) as bar:  # a terminal only
            for batch in bar:
                loss, terms = train_step(head, batch.to(device), optimizer, scaler, device, use_amp, class_weight)
                add_terms(sums, loss, terms)
                n_batches += 1
                bar.set_postfix_str(f"loss {sums['loss'] / n_batches:.4f}", refresh=False)
        return {"seconds": round(time.time() - t0, 3),
                **{f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()}}

    def evaluate() -> dict | None:
        if not len(dev_idx):
            return None
        probs = predict_probs(head, features, dev_idx, device, tc.workers, tc.amp)
        return dev_scores(labels[dev_idx], probs, features.manifest.classes)

    return train_epochs(head, tc.max_epochs, tc.patience, tc.monitor, train_epoch, evaluate, on_epoch_end)


def train_step(head: Head, batch: Batch, optimizer: torch.optim.Optimizer, scaler, device: torch.device,
               use_amp: bool, class_weight: torch.Tensor | None = None) -> tuple[float, dict]:
    """One optimizer step on one batch (autocast and loss scaling on CUDA with AMP); the loss and its terms."""
    with amp_autocast(device, use_amp):
        out = head(batch)
        loss, terms = head.loss(out, batch, class_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    head.optimizer_stepped()
    return float(loss.detach()), terms


def load_head(path: str | Path, config: dict) -> Head:
    """A finished cached-feature run's head (eval mode, CPU), from its validated config.json
    (msa_cache.load.load_run reads and validates it, and loads either mode)."""
    from msa_cache.heads.base import ModalitySpec

    spec = {k: ModalitySpec(**v) for k, v in config["modalities"].items()}
    s = config["spec"]
    head = create_head(s["head"], spec, len(config["classes"]), s["head_options"])
    load_weights(Path(path), head)
    return head.eval()
