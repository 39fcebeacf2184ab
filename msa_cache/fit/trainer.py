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
from msa_cache.train.driver import drive_run
from msa_cache.train.identity import changed_options, config_hash
from msa_cache.train.modality_dropout import ModalityDropout
from msa_cache.train.rundir import load_weights, write_run
from msa_cache.train.card import head_record
from msa_cache.fit.features import FeatureSet, open_head_features
from msa_cache.fit.folds import run_roles
from msa_cache.metrics import monitor_metric
from msa_cache.train.loop import (
    EpochHook, EpochProgress, RunResult, add_terms, amp_autocast, batch_bar, class_probs, class_weight_for, dev_scores,
    grad_scaler, manifest_labels, resolve_precision, seed_everything, train_epochs, train_rows,
)

PREDICT_BATCH = 256
# Cache provenance copied into a run's config.json, per modality (see msa_cache/finetune/record.py).
ENCODER_RECORD_KEYS = ("encoder", "modality", "model_id", "revision", "weights_sha256", "preprocessing", "layers",
                       "pooled_only", "dtype", "encoder_source")


def resolve_run(spec: RunSpec, runs_root: str | Path, features: FeatureSet) -> tuple[RunSpec, Path]:
    """The resolved spec (RunSpec.resolved: every head option, the manifest's default monitor where
    none is set) and the run directory it maps to. The identity is hashed from the resolved spec, so
    every caller (fit, another shard's read-back, tune) finds the same folder; `spec` is not changed."""
    spec = spec.resolved(features.manifest)
    identity = spec.identity(features.manifest.fingerprint(), features.cache_fingerprints())
    defaults = dataclasses.asdict(get_head(spec.head).Config())
    out = run_dir(runs_root, features.manifest.name, spec, config_hash(identity),
                  changed_options(spec.head_options, defaults))
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
    if features is None:
        features = open_head_features(read_manifest(spec.manifest), spec.caches, spec.head, spec.head_options,
                                      spec.train.text_pool)
    return drive_run(CachedMode(spec, features, log, on_epoch_end, progress), runs_root, tensorboard)


class CachedMode:
    """fit's part of a run (train/driver.py): a head on cached features."""

    def __init__(self, spec: RunSpec, features: FeatureSet, log: Callable[[str], None],
                 on_epoch_end: EpochHook | None, progress: Callable[[str], None] | None):
        self.spec, self.features, self.log = spec, features, log
        self.hooks: list[EpochHook] = [] if on_epoch_end is None else [on_epoch_end]
        self.progress = progress

    def resolve(self, runs_root: str | Path) -> Path:
        self.spec, out = resolve_run(self.spec, runs_root, self.features)
        self.runs_root = runs_root
        return out

    def prepare(self) -> None:
        train_rows(self.features.manifest)  # refuse before any folder is made
        command_options({"spec": self.spec.to_dict()})  # a spec no command can say (see command.py) fails now
        if self.progress is not None:
            self.hooks.append(EpochProgress(self.spec.train.max_epochs, self.spec.train.monitor, self.progress))

    def train(self, tmp: Path, record_hooks: list[EpochHook]) -> dict:
        return _train_and_write(self.spec, self.features.manifest, self.features, tmp, self.log,
                                [*self.hooks, *record_hooks], runs_root=self.runs_root)


def epoch_order(train_idx: np.ndarray, labels: np.ndarray, oversample: bool, rng: np.random.Generator) -> np.ndarray:
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


def predict_probs(head: Head, features: FeatureSet, idx: np.ndarray, device: torch.device,
                  workers: int = 0, amp: bool = False,
                  transform: Callable[[np.ndarray, Batch], Batch] | None = None) -> np.ndarray:
    """Class probabilities of rows `idx`, PREDICT_BATCH rows a batch (tokens only for token heads).
    transform(rows, batch): changes each batch before the head sees it (evaluate's corruptions)."""
    head.eval()
    labels, modality_labels = manifest_labels(features.manifest)

    def logits(batch: Batch) -> torch.Tensor:
        with amp_autocast(device, amp), head.logits_only():
            return head(batch.to(device)).logits

    parts = _batches(idx, PREDICT_BATCH)
    batches = _loader(features, parts, labels, modality_labels, head, workers)
    if transform is not None:
        batches = (transform(part, batch) for part, batch in zip(parts, batches))
    return class_probs(batches, logits, head.num_classes)


def optimizer_settings(head_optimizer: str, train) -> dict:
    """The optimiser a run uses, its unset (None) options resolved: the head's own kind (adam for the
    seed-000 heads, else adamw), lr 1e-3, weight decay 0 for Adam and 0.01 for AdamW; a constant lr.
    config.json records it beside the spec (the spec keeps None, so run identities are unchanged)."""
    kind = train.optimizer or head_optimizer
    if kind not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer '{kind}'; use adam or adamw")
    default_wd = 0.0 if kind == "adam" else 0.01
    return {"optimizer": kind, "lr": train.lr if train.lr is not None else 1e-3,
            "weight_decay": train.weight_decay if train.weight_decay is not None else default_wd,
            "betas": [0.9, 0.999], "eps": 1e-8, "lr_schedule": "constant"}


def make_optimizer(head: Head, spec: RunSpec, params: list[torch.Tensor] | None = None) -> torch.optim.Optimizer:
    """The run's optimizer over the head's trainable parameters (or `params`: fit/seeds.py's stacked ones)."""
    settings = optimizer_settings(head.optimizer, spec.train)
    if params is None:
        params = [p for p in head.parameters() if p.requires_grad]
    make = torch.optim.Adam if settings["optimizer"] == "adam" else torch.optim.AdamW
    return make(params, lr=settings["lr"], weight_decay=settings["weight_decay"])


def labeled_rows(spec: RunSpec, manifest: Manifest, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's role in this run (its split, or its cross-validation fold's), and the labeled train and
    dev rows; an error when there is nothing to learn from."""
    roles = run_roles(np.array(manifest.column("split")), labels, spec.cv_folds, spec.cv_fold, spec.cv_seed,
                      refit=spec.refit is not None)
    train_idx = np.flatnonzero((roles == "train") & (labels >= 0))
    dev_idx = np.flatnonzero((roles == "dev") & (labels >= 0))
    if len(train_idx) == 0:
        raise ValueError(f"{manifest.path}: no labeled train rows; a head needs some to learn from")
    return roles, train_idx, dev_idx


def _train_and_write(spec: RunSpec, manifest: Manifest, features: FeatureSet, out: Path, log,
                     on_epoch_end=None, runs_root: str | Path = "runs") -> dict:
    tc = spec.train
    seed_everything(spec.seed)
    device = resolve_device(tc.device)
    labels, modality_labels = manifest_labels(manifest)
    roles, train_idx, dev_idx = labeled_rows(spec, manifest, labels)
    classes = manifest.classes
    spec_dims = features.spec()
    head = create_head(spec.head, spec_dims, len(classes), spec.head_options).to(device)
    class_weight = class_weight_for(labels[train_idx], len(classes), tc.class_weights)
    monitor = monitor_metric(tc.monitor).score
    history: list[dict] = []
    if tc.modality_dropout and not head.droppable_sides():
        log(f"{spec.head}: --modality-dropout does nothing here: the head reads one side only "
            f"({', '.join(sorted(head.modalities or head.spec))}), and dropping it would drop everything")

    if head.fit_mode == "closed_form":
        features.load_pooled()
        x = lambda idx: {m: features.pooled[m][idx].float().numpy() for m in head.spec}  # noqa: E731
        if spec.refit is not None:  # refit: the C the folds chose, nothing left to pick on
            head.grid = [_refit_value(spec, "C")]
            dev_idx = train_idx
        # modality dropout: the probe fits its expected loss in closed form (ProbeHead.fit_closed_form)
        info = head.fit_closed_form(x(train_idx), labels[train_idx], x(dev_idx), labels[dev_idx], monitor,
                                    class_weight=None if class_weight is None else class_weight.numpy(),
                                    seed=spec.seed, modality_dropout=tc.modality_dropout)
        history.append({"epoch": 0, **{k: v for k, v in info.items()}})
        head.to(device)
    else:
        loop_spec = spec
        if spec.refit is not None:  # no dev rows: the loop runs the folds' epoch count and keeps the last
            loop_spec = dataclasses.replace(spec, train=dataclasses.replace(tc, max_epochs=int(_refit_value(spec, "epochs"))))
        history = train_loop(head, loop_spec, features, train_idx, dev_idx, labels, modality_labels,
                             class_weight, device, on_epoch_end)

    return write_fit_run(spec, features, out, head, history, roles, device, runs_root)


def write_fit_run(spec: RunSpec, features: FeatureSet, out: Path, head: Head, history: list[dict],
                  roles: np.ndarray, device: torch.device, runs_root: str | Path = "runs") -> dict:
    """Predict every row (unlabeled ones too) with the selected model and write the run's files into `out`
    (also used by fit/seeds.py for each seed trained in a group); its metrics."""
    manifest, tc, spec_dims = features.manifest, spec.train, features.spec()
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
        "classes": manifest.classes,
        "num_parameters": sum(p.numel() for p in head.parameters()),
        # The optimiser as used (spec.train keeps None for "the default"); the probe fits in closed form.
        "optimizer": ({"optimizer": "closed-form (scikit-learn LogisticRegression)"} if head.fit_mode == "closed_form"
                      else optimizer_settings(head.optimizer, tc)),
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
    """fit's epochs through the shared loop (train/loop.train_epochs): its step is `train_step` on cached
    feature batches (with some rows' modality missing under --modality-dropout), its predict function
    `predict_probs`. Returns the history."""
    tc = spec.train
    optimizer = make_optimizer(head, spec)
    use_amp = resolve_precision(device, tc.amp, bf16=False) == "fp16"
    scaler = grad_scaler(use_amp)
    if class_weight is not None:
        class_weight = class_weight.to(device)
    rng = np.random.default_rng(spec.seed)
    dropout = ModalityDropout(head, tc.modality_dropout, spec.seed)

    def train_epoch(epoch: int) -> dict:
        head.train()
        t0 = time.time()
        sums: dict[str, float] = {}
        n_batches = 0
        batches = _batches(epoch_order(train_idx, labels, tc.oversample, rng), tc.batch_size)
        loader = _loader(features, batches, labels, modality_labels, head, tc.workers)
        with batch_bar(loader, len(batches), epoch, tc.max_epochs) as bar:  # a terminal only
            for batch in bar:
                batch = dropout(batch.to(device))  # the batch itself when dropout is off
                loss, terms = train_step(head, batch, optimizer, scaler, device, use_amp, class_weight)
                add_terms(sums, loss, terms)
                n_batches += 1
                bar.set_postfix_str(f"loss {sums['loss'] / n_batches:.4f}", refresh=False)
        return {"seconds": round(time.time() - t0, 3),
                **{f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()},
                "lr_head": optimizer.param_groups[0]["lr"]}  # constant today; TensorBoard's lr/head

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
    (msa_cache.finished_run.load_run reads and validates it, and loads either mode)."""
    from msa_cache.heads.base import ModalitySpec

    spec = {k: ModalitySpec(**v) for k, v in config["modalities"].items()}
    s = config["spec"]
    head = create_head(s["head"], spec, len(config["classes"]), s["head_options"])
    load_weights(Path(path), head)
    return head.eval()
