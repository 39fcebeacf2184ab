"""End-to-end fine-tuning: encoders in the loop, staged, writing the same run directory as `fit`.

    epochs 1..head_epochs        encoders frozen (no grad, eval mode): the head learns first
    epochs head_epochs+1..       the `unfreeze` encoders train too, at encoder_lr (warm-up restarts)

Every epoch is scored on dev; early stopping and the selected epoch use dev
only. The selected model then predicts every manifest row, and the run
directory gets config.json ("mode": "finetune", the encoders' records), command.yaml (the
`msa-cache finetune --config` options that reproduce it), history.jsonl (appended per epoch
while it trains), metrics.json, predictions.parquet, confusion.png and model.safetensors (the
state dict of encoders + head).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from msa_cache.device import resolve_device
from msa_cache.finetune.config import FinetuneSpec, finetune_run_dir
from msa_cache.finetune.data import PostCollator, PostDataset, batch_to, make_loader, make_text_aug
from msa_cache.finetune.baselines import get_baseline
from msa_cache.finetune.build import assemble_model, open_encoders
from msa_cache.finetune.model import FinetuneModule
from msa_cache.finetune.config import LR_SCHEDULE
from msa_cache.finetune.optim import MAX_GRAD_NORM, make_optimizer
from msa_cache.finetune.record import encoder_record
from msa_cache.heads import get_head
from msa_cache.heads.base import HeadConfig
from msa_cache.manifest import Manifest, read_manifest
from msa_cache.provenance import library_versions
from msa_cache.train.driver import drive_run
from msa_cache.train.identity import FINETUNE, changed_options, config_hash, monitor_for
from msa_cache.train.rundir import write_run
from msa_cache.train.card import head_record
from msa_cache.train.loop import (
    EpochHook, EpochProgress, RunResult, add_terms, autocast, batch_bar, class_probs, class_weight_for, dev_scores,
    grad_scaler, manifest_labels, resolve_precision, seed_everything, train_epochs, train_rows,
)

# Batches between progress lines where no tqdm bar is shown (logs, pipes): a CPU epoch takes minutes.
LOG_EVERY = 50


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # macOS: bytes; Linux: KiB


def _head_config_class(spec: FinetuneSpec) -> type:
    return HeadConfig if spec.baseline else get_head(spec.head).Config


def _default_options(spec: FinetuneSpec) -> dict:
    """The head's option defaults in fine-tune mode (its Config's, then its `finetune_defaults`)."""
    defaults = dataclasses.asdict(_head_config_class(spec)())
    return defaults if spec.baseline else {**defaults, **get_head(spec.head).finetune_defaults}


def full_head_options(spec: FinetuneSpec) -> dict:
    """Every head option with its default filled in (so the run's identity does not depend on defaults)."""
    cls = _head_config_class(spec)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec.head_options) - known)
    if unknown:
        raise ValueError(f"'{spec.head}' has no option(s) {unknown}; its options are {sorted(known)}")
    return {**_default_options(spec), **spec.head_options}


def finetune_run(spec: FinetuneSpec, runs_root: str | Path = "runs", log: Callable[[str], None] = print,
                 tensorboard: bool = False) -> RunResult:
    """Fine-tune `spec` unless its run directory is already finished; return its metrics.
    tensorboard: also write the epochs as TensorBoard events in <run>/tensorboard (a finished run: from its
    history.jsonl); not part of the identity."""
    return drive_run(FinetuneMode(spec, log), runs_root, tensorboard)


class FinetuneMode:
    """finetune's part of a run (train/driver.py): encoders and head in the loop."""

    def __init__(self, spec: FinetuneSpec, log: Callable[[str], None]):
        self.spec, self.log = spec, log

    def resolve(self, runs_root: str | Path) -> Path:
        spec, manifest = self.spec, read_manifest(self.spec.manifest)
        # The monitor is resolved before the identity is hashed: a run records (and is named by) the metric it used.
        train = dataclasses.replace(spec.train, monitor=monitor_for(spec.train, manifest)).resolved()
        spec = dataclasses.replace(spec, train=train, head_options=full_head_options(spec))
        # The pretrained weights are part of the identity, so the encoders load before the folder is known.
        self.encoders = open_encoders(spec)
        self.records = {role: encoder_record(enc) for role, enc in self.encoders.items()}
        identity = spec.identity(manifest.fingerprint(), self.records)
        if _reads_image_cls(spec, self.encoders):  # runs that read the patch mean in its place stay distinct
            identity["image_pooled"] = "image/cls"
        self.spec, self.manifest, self.runs_root = spec, manifest, runs_root
        return finetune_run_dir(runs_root, manifest.name, spec, config_hash(identity),
                                changed_options(spec.head_options, _default_options(spec)))

    def prepare(self) -> None:
        seed_everything(self.spec.seed)  # after loading: the head's init depends on the seed only
        self.model = assemble_model(self.spec, len(self.manifest.classes), self.encoders)

    def train(self, tmp: Path, record_hooks: list[EpochHook]) -> dict:
        return _train_and_write(self.spec, self.manifest, self.model, self.records, tmp, self.log, record_hooks,
                                self.runs_root)


def _reads_image_cls(spec: FinetuneSpec, encoders: dict) -> bool:
    """The head asks for the visual [CLS] (Head.image_pool) and the image encoder has one."""
    if spec.baseline is not None or "image" not in encoders:
        return False
    return (get_head(spec.head).image_pool(spec.head_options) == "cls"
            and "image/cls" in encoders["image"].field_shapes())


def _train_and_write(spec: FinetuneSpec, manifest: Manifest, model: FinetuneModule, records: dict, out: Path,
                     log, record_hooks: list[EpochHook], runs_root: str | Path = "runs") -> dict:
    tc = spec.train
    device = resolve_device(tc.device)
    precision = resolve_precision(device, tc.amp)
    model.to(device)
    no_checkpointing = model.enable_grad_checkpointing() if tc.grad_checkpointing else []
    if no_checkpointing:
        log(f"gradient checkpointing is not supported by {', '.join(no_checkpointing)}; they run without it")
    labels, _ = manifest_labels(manifest)
    splits = np.array(manifest.column("split"))
    train_idx = train_rows(manifest, tc.limit_train)
    dev_idx = np.flatnonzero((splits == "dev") & (labels >= 0))
    class_weight = class_weight_for(labels[train_idx], len(manifest.classes), tc.class_weights)
    t0 = time.time()
    history = train_loop(model, spec, manifest, train_idx, dev_idx, class_weight, device, precision, log, record_hooks)
    seconds_train = time.time() - t0

    log(f"predicting all {len(manifest)} rows with the selected epoch")
    t0 = time.time()
    probs = predict_rows(model, manifest, np.arange(len(manifest)), device, precision, 2 * tc.batch_size, tc.workers)
    epochs = [h["seconds"] for h in history if "seconds" in h]
    config = {
        "mode": FINETUNE,
        "spec": spec.to_dict(),
        "encoders": records,
        "manifest_fingerprint": manifest.fingerprint(),
        "text_pair": manifest.has_text_pair,  # sentence + target inputs: predict needs --text-pair then
        "modalities": {k: dataclasses.asdict(v) for k, v in model.head.spec.items()},
        "fields": model.fields_record(),
        "classes": manifest.classes,
        "train_rows": int(len(train_idx)),
        # The optimiser as used (finetune/optim.py): AdamW, a group per part, each on its own warm-up clock.
        "optimizer": {"optimizer": "adamw", "lr": tc.lr, "encoder_lr": tc.encoder_lr,
                      "weight_decay": tc.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8,
                      "lr_schedule": LR_SCHEDULE, "warmup": tc.warmup, "max_grad_norm": MAX_GRAD_NORM},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_head_parameters": sum(p.numel() for p in model.head_params()),
        "device": str(device),
        "precision": precision,
        "grad_checkpointing_unsupported": no_checkpointing,
        "seconds_train": round(seconds_train, 1),  # all epochs, dev scoring included
        "seconds_predict_all": round(time.time() - t0, 1),
        "seconds_per_epoch": round(float(np.mean(epochs)), 1) if epochs else None,
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": (round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None),
        "versions": library_versions(),
        "runs": str(runs_root),  # where it was written (command.yaml's --runs)
        **head_record(model.head, model.fields_record()),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    paper = get_baseline(spec.baseline).paper if spec.baseline else ""
    return write_run(out, manifest, probs, state, history, config, f"finetune {spec.head} seed {spec.seed}: dev",
                     baseline_paper=paper)


def backward_step(model: FinetuneModule, batch: dict, class_weight, device, precision: str, scaler,
                  divide: int = 1) -> tuple[float, dict]:
    """Forward one batch and add its gradient, scaled by 1/divide (one of `divide` accumulated batches)."""
    batch = batch_to(batch, device)
    with autocast(device, precision):
        loss, terms = model.loss(batch, class_weight)
    scaler.scale(loss / divide).backward()
    return float(loss.detach()), terms


def optimizer_step(model: FinetuneModule, optimizer, scaler) -> None:
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], MAX_GRAD_NORM)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    model.head.optimizer_stepped()  # once per step, not per accumulated micro-batch (INFIG's EMA and queue)


def train_loop(model: FinetuneModule, spec: FinetuneSpec, manifest: Manifest, train_idx: np.ndarray,
               dev_idx: np.ndarray, class_weight, device: torch.device, precision: str, log,
               on_epoch_end: EpochHook | list[EpochHook] | None = None) -> list[dict]:
    """finetune's epochs through the shared loop (train/loop.train_epochs): its step is `backward_step` +
    `optimizer_step` on raw-input batches (staged unfreezing, accumulation), its predict function
    `predict_rows`. Returns the history."""
    tc = spec.train
    specs = model.input_specs()
    dataset = PostDataset(manifest, train_idx, specs, train=True, augment=tc.augment,
                          text_aug=make_text_aug(tc.text_aug, manifest))
    loader = make_loader(dataset, PostCollator(specs, model.pad_to_max), tc.batch_size, shuffle=True,
                         workers=tc.workers, seed=spec.seed, pin_memory=device.type == "cuda")
    n_batches = len(loader)
    steps_per_epoch = math.ceil(n_batches / tc.accumulate)
    unfreeze_epoch = tc.first_unfrozen_epoch
    optimizer, schedule = make_optimizer(model, tc.lr, tc.encoder_lr, tc.weight_decay, tc.max_epochs * steps_per_epoch,
                                         tc.warmup, (unfreeze_epoch - 1) * steps_per_epoch)
    scaler = grad_scaler(precision)
    if class_weight is not None:
        class_weight = class_weight.to(device)
    labels = manifest.labels("label")

    def train_epoch(epoch: int) -> dict:
        stage = tc.unfreeze if epoch >= unfreeze_epoch else []
        model.set_trainable(stage)
        model.train()
        t0 = time.time()
        lr_head, lr_encoder = (g["lr"] for g in optimizer.param_groups)  # at the epoch's first step
        sums: dict[str, float] = {}
        with batch_bar(loader, n_batches, epoch, tc.max_epochs) as bar:  # a terminal only; else LOG_EVERY lines
            for i, batch in enumerate(bar):
                group = min(tc.accumulate, n_batches - (i // tc.accumulate) * tc.accumulate)  # the last may be short
                loss, terms = backward_step(model, batch, class_weight, device, precision, scaler, divide=group)
                if (i + 1) % tc.accumulate == 0 or i + 1 == n_batches:
                    optimizer_step(model, optimizer, scaler)
                    schedule.step()
                add_terms(sums, loss, terms)
                bar.set_postfix_str(f"loss {sums['loss'] / (i + 1):.4f}", refresh=False)
                if bar.disable and (i + 1) % LOG_EVERY == 0:
                    log(f"epoch {epoch} batch {i + 1}/{n_batches}: loss {sums['loss'] / (i + 1):.4f} "
                        f"({(time.time() - t0) / (i + 1):.2f} s/batch)")
        return {"stage": ("head+" + ",".join(stage)) if stage else "head", "seconds": round(time.time() - t0, 1),
                **{f"train_{k}": v / n_batches for k, v in sums.items()}, "lr_head": lr_head, "lr_encoder": lr_encoder}

    def evaluate() -> dict | None:
        if not len(dev_idx):
            return None
        t_dev = time.time()
        probs = predict_rows(model, manifest, dev_idx, device, precision, 2 * tc.batch_size, tc.workers)
        return {**dev_scores(labels[dev_idx], probs, manifest.classes), "dev_seconds": round(time.time() - t_dev, 1)}

    def measure(epoch: int, record: dict) -> None:
        record["peak_rss_mb"] = peak_rss_mb()  # before the hooks that print and append the record

    def details(record: dict) -> str:
        rss = record.get("peak_rss_mb")
        return (f"stage {record['stage']}, lr {record['lr_head']:.2e} head / {record['lr_encoder']:.2e} encoders"
                + (f", peak RSS {rss:.0f} MB" if rss is not None else ""))

    progress = EpochProgress(tc.max_epochs, tc.monitor, log, details=details)
    extra = [] if on_epoch_end is None else [on_epoch_end] if callable(on_epoch_end) else list(on_epoch_end)
    hooks = [measure, progress, *extra]
    return train_epochs(model, tc.max_epochs, tc.patience, tc.monitor, train_epoch, evaluate, hooks)


def predict_rows(model: FinetuneModule, manifest: Manifest, rows: np.ndarray, device: torch.device,
                 precision: str = "fp32", batch_size: int = 32, workers: int = 0) -> np.ndarray:
    """Class probabilities [len(rows), C] with the eval preprocessing (no augmentation)."""
    model.eval()
    specs = model.input_specs()
    loader = make_loader(PostDataset(manifest, rows, specs), PostCollator(specs, model.pad_to_max), batch_size,
                         shuffle=False, workers=workers)

    def logits(batch: dict) -> torch.Tensor:
        with autocast(device, precision), model.head.logits_only():
            return model(batch_to(batch, device)).logits

    return class_probs(loader, logits, model.head.num_classes)
