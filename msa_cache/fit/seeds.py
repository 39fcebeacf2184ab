"""Several seeds of one configuration trained together, in one pass over the epochs.

`fit --seed 0 --seed 1 ...` and `compare --seeds N` train the same head with the same
options once per seed. For a small pooled head most of each step is fixed per-op cost,
so the seeds' parameters are stacked (`torch.func.stack_module_state`) and one
`torch.vmap`-ed forward, one backward and one optimizer step serve every seed.

Each seed stays the run it would be alone (fit_run), up to float rounding (the
stacked matmuls sum in another order):
- initialisation: `seed_everything(seed)` then `create_head`, as fit/trainer.py does;
- data order: its own `np.random.default_rng(seed)`, drawn as train_loop draws it;
- dropout: each seed keeps its own torch RNG state; its masks are drawn under it with
  `F.dropout`, the shapes and order of the seed's own forward (and the one number per
  epoch and per dev pass a DataLoader iterator draws is drawn too), so every seed
  sees the masks it would see alone;
- loss: the head's own `loss`, per seed, on its slice of the outputs; the seeds' losses
  are summed, so each seed's gradient is its own (the sum's other terms do not depend
  on its parameters); Adam/AdamW work element by element, so one optimizer over the
  stacked parameters steps each seed as its own would;
- early stopping: train/loop.py's rule per seed; a seed that stops keeps its best
  state and leaves the stack (its parameters and optimizer moments are sliced out).
Every seed is then predicted and written by fit/trainer.py's own code, as its own
`seed-K` run directory with the identity it has when trained alone.

Where it does not pay, seeds train one at a time (auto mode, `cost_refusal`, one log line):
on a CPU a head above CPU_STACK_MAX_PARAMS parameters per seed is bound by its arithmetic,
not by per-op overhead, and is slower stacked. Heads that cannot be stacked train one at a
time too (`class_refusal`, `batch_refusal`, one log line saying why): closed-form heads
(probe), token heads (each seed would stream its own token batches from HDF5), heads with
buffers or a per-step hook (INFIG's queue and EMA), runs with --modality-dropout (`spec_refusal`:
each seed would need its own stand-in inputs), other dropout kinds than nn.Dropout, and
heads whose forward or loss does not run stacked (tried on two rows first: e.g. a forward
that draws random numbers itself, or returns non-tensors). So do CUDA runs with AMP (the
loss scaler would skip a step for every seed when one overflows) and torch < 2.0 (no
torch.func). Not detected: a loss that reads state its forward left on the module (the
forward runs on a stand-in module); no head here does that.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from msa_cache.device import resolve_device
from msa_cache.fit.config import RunSpec
from msa_cache.fit.features import FeatureSet, open_head_features
from msa_cache.fit.trainer import (
    PREDICT_BATCH, epoch_order, fit_run, labeled_rows, make_optimizer, resolve_run, train_rows, write_fit_run,
)
from msa_cache.heads import Batch, Head, HeadOutput, ModalityInput, create_head, get_head
from msa_cache.manifest import read_manifest
from msa_cache.train.command import command_options
from msa_cache.train.loop import (
    EpochProgress, RunResult, add_terms, class_weight_for, dev_scores, manifest_labels, seed_everything, stop_reason,
)
from msa_cache.metrics import monitor_metric
from msa_cache.train.rundir import append_history, build_run_dir, is_finished, read_metrics
from msa_cache.train.tensorboard_log import history_events, run_events

Log = Callable[[str], None]


def has_torch_func() -> bool:
    func = getattr(torch, "func", None)
    return func is not None and all(hasattr(func, n) for n in ("vmap", "functional_call", "stack_module_state"))


def class_refusal(cls) -> str | None:
    """Why seeds of this head (its class, or its catalog entry) cannot train stacked, from its traits
    alone; None when they may."""
    if not has_torch_func():
        return f"torch {torch.__version__} has no torch.func (2.0 or newer stacks seeds)"
    if cls.fit_mode != "gradient":
        return "it is fitted in closed form"
    if cls.uses_tokens:
        return "it reads token features (each seed streams its own token batches)"
    model = cls if isinstance(cls, type) else cls.model_class()  # a catalog entry: its model class
    if model.optimizer_stepped is not Head.optimizer_stepped:
        return "it updates state after each optimizer step"
    return None


def spec_refusal(spec: RunSpec) -> str | None:
    """Why the seeds of `spec` cannot train stacked, from its settings alone; None when they may."""
    if spec.train.modality_dropout:
        return "modality dropout trains seeds one at a time (each seed drops its own rows)"
    return None


def batch_refusal(head: Head, spec: RunSpec, device: torch.device) -> str | None:
    """Why the seeds of `head` (built for `spec`) cannot train stacked; None when they can (the stacked
    forward is still tried on a small batch before training: `_Group.check`)."""
    reason = class_refusal(type(head)) or spec_refusal(spec)
    if reason is not None:
        return reason
    if any(True for _ in head.buffers()):
        return "it keeps state in buffers"
    if device.type == "cuda" and spec.train.amp:
        return "mixed precision on CUDA scales the loss of all seeds at once (--no-amp batches them)"
    odd = sorted({type(m).__name__ for m in head.modules()
                  if isinstance(m, nn.modules.dropout._DropoutNd) and type(m) is not nn.Dropout})
    if odd:
        return f"it uses {', '.join(odd)} (only nn.Dropout draws per-seed masks here)"
    return None


# On a CPU, stacking pays only for small heads: a step of a bigger one is bound by its arithmetic and memory
# traffic, not by per-op overhead, and the stacked tensors fall out of the caches. Measured on a 2-core Xeon,
# 5 seeds of a late-fusion MLP, one thread (`bench/seeds.py --sweep`, bench/README.md): stacked / one at a
# time = 0.29 at 2.6k parameters per seed, 0.56 at 17k and 68k, 0.87 at 133k, 1.24 at 199k, 1.33 at 657k.
CPU_STACK_MAX_PARAMS = 100_000


def cost_refusal(head: Head, device: torch.device) -> str | None:
    """Why stacking would not pay for this head on this device (auto mode); None when it does."""
    n = sum(p.numel() for p in head.parameters() if p.requires_grad)
    if device.type == "cpu" and n > CPU_STACK_MAX_PARAMS:
        return (f"{n:,} parameters per seed: on a CPU stacking pays up to {CPU_STACK_MAX_PARAMS:,} "
                "(--batch-seeds stacks them anyway)")
    return None


def dataloader_draw() -> None:
    """The random number a DataLoader iterator draws from torch's RNG when it starts (its workers' base
    seed): fit's train epochs and dev passes each start one, so a seed trained alone draws it too."""
    iter(torch.utils.data.DataLoader([], batch_size=None))


@dataclass
class _RngState:
    """One seed's torch RNG states (CPU, and CUDA where it trains), swapped in while its random numbers are drawn."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def current(cls, device: torch.device) -> "_RngState":
        return cls(torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)

    @contextlib.contextmanager
    def active(self, device: torch.device):
        saved = _RngState.current(device)
        self._set(device)
        try:
            yield
        finally:
            mine = _RngState.current(device)
            self.cpu, self.cuda = mine.cpu, mine.cuda
            saved._set(device)

    def _set(self, device: torch.device) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)


class _SeedDropout(nn.Module):
    """nn.Dropout in the stacked forward: multiplies by the next mask of `feed` (one per seed, drawn
    beforehand by F.dropout under each seed's RNG); while the feed records, it notes (shape, p) instead."""

    def __init__(self, p: float, feed: "_MaskFeed"):
        super().__init__()
        self.p, self.feed = p, feed

    def forward(self, x):
        if not self.training or self.p == 0:  # F.dropout returns its input then, drawing nothing
            return x
        if self.feed.recording is not None:
            self.feed.recording.append((tuple(x.shape), self.p))
            return x
        return x * self.feed.masks.pop(0)


class _MaskFeed:
    def __init__(self):
        self.masks: list = []
        self.recording: list | None = None


@dataclass
class _Seed:
    spec: RunSpec
    out: Path
    head: Head
    rng: np.random.Generator
    torch_rng: _RngState
    hooks: list = field(default_factory=list)
    history: list = field(default_factory=list)
    sums: dict = field(default_factory=dict)
    best_score: float = -np.inf
    best_epoch: int = 0
    best_state: dict | None = None
    stopped: bool = False


class _Group:
    """The stacked seeds: their parameters, the vmapped forward, one step, one dev pass."""

    def __init__(self, seeds: list[_Seed], features: FeatureSet, device: torch.device):
        self.seeds, self.features, self.device = seeds, features, device
        head = seeds[0].head
        self.mods = list(head.spec)
        self.feed = _MaskFeed()
        # The module whose forward runs with each seed's parameters (torch.func.functional_call): a copy
        # on the meta device (no memory) with nn.Dropout replaced by _SeedDropout.
        self.base = copy.deepcopy(head).to("meta")
        for module in list(self.base.modules()):
            for name, child in list(module.named_children()):
                if type(child) is nn.Dropout:
                    setattr(module, name, _SeedDropout(child.p, self.feed))
        trainable = [n for n, p in head.named_parameters() if p.requires_grad]
        self.frozen = {n: p.detach() for n, p in head.named_parameters() if not p.requires_grad}
        stacked, _ = torch.func.stack_module_state([s.head for s in seeds])
        self.params = {n: stacked[n] for n in trainable}
        self.active = list(seeds)
        self.dropouts: dict[tuple, list[tuple]] = {}

    def _one(self, params, pooled, labels, modality_labels, masks):
        self.feed.masks = list(masks)
        batch = Batch({m: ModalityInput(x) for m, x in pooled.items()}, labels, modality_labels)
        out = torch.func.functional_call(self.base, {**params, **self.frozen}, (batch,))
        return out.logits, out.aux

    def _one_logits(self, params, pooled):
        batch = Batch({m: ModalityInput(x) for m, x in pooled.items()}, torch.zeros((), dtype=torch.long))
        with self.base.logits_only():
            return torch.func.functional_call(self.base, {**params, **self.frozen}, (batch,)).logits

    def dropout_calls(self, pooled: dict[str, torch.Tensor]) -> list[tuple]:
        """(input shape, p) of each dropout the forward applies, in call order, for one seed's batch of these
        shapes (pooled heads: they depend on the batch size only); found by a forward on meta tensors."""
        key = tuple((m, tuple(x.shape[1:])) for m, x in pooled.items())
        if key not in self.dropouts:
            rows = next(iter(pooled.values())).shape[1]
            self.feed.recording = []
            try:
                self.base.train()
                with torch.no_grad():
                    self.base(Batch({m: ModalityInput(torch.empty(x.shape[1:], device="meta"))
                                     for m, x in pooled.items()}, torch.zeros(rows, dtype=torch.long, device="meta")))
                self.dropouts[key] = self.feed.recording
            finally:
                self.feed.recording = None
        return self.dropouts[key]

    def check(self, idx: np.ndarray, labels: np.ndarray, modality_labels: dict) -> str | None:
        """None when the stacked forward and the head's loss run on a small batch; else why not."""
        try:
            pooled, y, my = self.inputs(np.stack([idx[:2]] * len(self.active)), labels, modality_labels)
            masks = [torch.ones((len(self.active), *shape), device=self.device)
                     for shape, _ in self.dropout_calls(pooled)]
            self.base.train()
            with torch.no_grad():
                logits, aux = torch.func.vmap(self._one)(self.params, pooled, y, my, masks)
                self.active[0].head.loss(HeadOutput(logits[0], _index(aux, 0)), _batch_of(pooled, y, my, 0, []))
            self.dev_probs(idx[:2])
        except Exception as e:  # noqa: BLE001 - any failure means: train this head one seed at a time
            return f"its forward does not run stacked under torch.vmap ({type(e).__name__}: {str(e)[:160]})"
        return None

    def inputs(self, idx: np.ndarray, labels: np.ndarray, modality_labels: dict):
        """Rows idx [seeds, batch] as stacked tensors on the device: pooled [S, B, d] float32 (the values
        FeatureSet.batch hands out), labels [S, B], modality labels [S, B]."""
        pooled = {m: self.features.pooled[m][idx].float().to(self.device) for m in self.mods}
        y = torch.from_numpy(labels[idx]).to(self.device)
        my = {k: torch.from_numpy(v[idx]).to(self.device) for k, v in modality_labels.items()}
        return pooled, y, my

    def step(self, optimizer, idx: np.ndarray, labels, modality_labels, ids, class_weight) -> None:
        """One optimizer step of every active seed; idx [active seeds, batch] are each seed's rows."""
        pooled, y, my = self.inputs(idx, labels, modality_labels)
        masks = []
        for shape, p in self.dropout_calls(pooled):
            per_seed = []
            for s in self.active:
                with s.torch_rng.active(self.device):  # the mask F.dropout draws for this seed alone
                    per_seed.append(torch.nn.functional.dropout(torch.ones(shape, device=self.device), p, True))
            masks.append(torch.stack(per_seed))
        self.base.train()
        logits, aux = torch.func.vmap(self._one)(self.params, pooled, y, my, masks)
        total = 0.0
        for i, s in enumerate(self.active):
            batch = _batch_of(pooled, y, my, i, [ids[j] for j in idx[i]])
            loss, terms = s.head.loss(HeadOutput(logits[i], _index(aux, i)), batch, class_weight)
            add_terms(s.sums, float(loss.detach()), terms)
            total = total + loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    @torch.no_grad()
    def dev_probs(self, idx: np.ndarray) -> np.ndarray:
        """[active seeds, rows, classes]: each seed's softmax in eval mode, PREDICT_BATCH rows at a time."""
        self.base.eval()
        out = []
        for s in range(0, len(idx), PREDICT_BATCH):
            block = idx[s:s + PREDICT_BATCH]
            pooled = {m: self.features.pooled[m][block].float().to(self.device) for m in self.mods}
            logits = torch.func.vmap(self._one_logits, in_dims=(0, None))(self.params, pooled)
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, axis=1)

    def state_of(self, i: int) -> dict:
        """Active seed i's state dict (CPU copies), as the head's own state_dict()."""
        return {**{n: p[i].detach().cpu().clone() for n, p in self.params.items()},
                **{n: p.cpu().clone() for n, p in self.frozen.items()}}

    def drop_stopped(self, optimizer: torch.optim.Optimizer) -> None:
        """Slice the seeds that stopped out of the parameters and the optimizer's state (Adam's moments;
        its step count is the same for every seed)."""
        keep = [i for i, s in enumerate(self.active) if not s.stopped]
        if len(keep) == len(self.active):
            return
        old = self.params
        self.params = {n: p.detach()[keep].clone().requires_grad_(True) for n, p in old.items()}
        self.active = [self.active[i] for i in keep]
        state = collections.defaultdict(dict)
        for n, p in old.items():
            state[self.params[n]] = {k: (v[keep].clone() if torch.is_tensor(v) and v.dim() > 0
                                         else v.clone() if torch.is_tensor(v) else v)
                                     for k, v in optimizer.state.get(p, {}).items()}
        (group,) = optimizer.param_groups
        group["params"] = list(self.params.values())
        optimizer.state = state


def _index(tree, i: int):
    if torch.is_tensor(tree):
        return tree[i]
    if isinstance(tree, dict):
        return {k: _index(v, i) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_index(v, i) for v in tree)
    return tree


def _batch_of(pooled, y, my, i: int, ids: list) -> Batch:
    return Batch({m: ModalityInput(x[i]) for m, x in pooled.items()}, y[i], {k: v[i] for k, v in my.items()}, ids)


# -- the driver ---------------------------------------------------------------------------------------
def fit_seeds(specs: list[RunSpec], runs_root: str | Path = "runs", features: FeatureSet | None = None,
              log: Log = print, progress: Log | None = None, tensorboard: bool = False,
              batch: bool | None = None) -> list[RunResult]:
    """fit_run for each spec (the same configuration, other seeds), in order: finished runs are read back,
    the others trained together where the head allows it and it pays (see the module doc), else one at a time.
    batch: None (auto): stacked where the head can be and it pays (`cost_refusal`); True: wherever the head
    can be; False: always one at a time. progress: one line per seed and epoch ("seed K: epoch ...")."""
    if not specs:
        return []
    first = specs[0]
    if any(_without_seed(s) != _without_seed(first) for s in specs):
        raise ValueError("fit_seeds trains seeds of one configuration; these specs differ in more than the seed")
    manifest = features.manifest if features is not None else read_manifest(first.manifest)
    if features is None:
        features = open_head_features(manifest, first.caches, first.head, first.head_options,
                                      first.train.text_pool)
    results: dict[int, RunResult] = {}
    todo = []
    for k, spec in enumerate(specs):
        resolved, out = resolve_run(spec, runs_root, features)
        if is_finished(out):
            if tensorboard:
                history_events(out)
            results[k] = RunResult(out, read_metrics(out), skipped=True)
        else:
            todo.append((k, resolved, out))
    reason = _refusal(todo[0][1], features, cost=batch is None) if batch is not False and len(todo) >= 2 else None
    if batch is False or len(todo) < 2 or reason is not None:
        if reason is not None:
            log(f"{first.head}: training its {len(todo)} seeds one at a time: {reason}")
        for k, _, _ in todo:
            results[k] = fit_run(specs[k], runs_root, features, log=log, progress=progress, tensorboard=tensorboard)
        return [results[k] for k in range(len(specs))]
    trained = _fit_group([(r, out) for _, r, out in todo], features, log, progress, tensorboard, runs_root)
    for (k, _, _), r in zip(todo, trained):
        results[k] = r
    return [results[k] for k in range(len(specs))]


def _without_seed(spec: RunSpec) -> dict:
    d = spec.to_dict()
    d.pop("seed")
    return d


def _refusal(spec: RunSpec, features: FeatureSet, cost: bool) -> str | None:
    # said without building the head (a token head may be big)
    reason = class_refusal(get_head(spec.head)) or spec_refusal(spec)
    if reason is not None:
        return reason
    device = resolve_device(spec.train.device)
    heads = [create_head(spec.head, features.spec(), len(features.manifest.classes), spec.head_options).to(device)
             for _ in range(2)]
    reason = batch_refusal(heads[0], spec, device) or (cost_refusal(heads[0], device) if cost else None)
    if reason is not None:
        return reason
    features.load_pooled()
    group = _Group([_Seed(spec, Path(), h, np.random.default_rng(0), _RngState.current(device)) for h in heads],
                   features, device)
    labels, modality_labels = manifest_labels(features.manifest)
    return group.check(np.arange(min(2, len(labels))), labels, modality_labels)


def _fit_group(runs: list[tuple[RunSpec, Path]], features: FeatureSet, log: Log, progress: Log | None,
               tensorboard: bool, runs_root) -> list[RunResult]:
    """Train the runs' seeds stacked, each in its own tmp folder (build_run_dir, nested: a failure removes
    them all), and write each one's run directory."""
    manifest = features.manifest
    train_rows(manifest)  # refuse before any folder is made
    for spec, _ in runs:
        command_options({"spec": spec.to_dict()})
    t0 = time.time()
    trained: dict = {}

    def nest(k: int, tmps: list[Path]) -> None:
        if k == len(runs):
            with contextlib.ExitStack() as stack:
                events = [stack.enter_context(run_events(tmp, tensorboard)) for tmp in tmps]
                trained["metrics"] = _train_and_write_group(runs, tmps, events, features, progress, runs_root)
            return

        def work(tmp: Path) -> dict:
            nest(k + 1, tmps + [tmp])
            return trained["metrics"][k]

        build_run_dir(runs[k][1], work)

    nest(0, [])
    seconds = (time.time() - t0) / len(runs)  # each run's share of the group's time
    return [RunResult(out, m, skipped=False, seconds=seconds) for (_, out), m in zip(runs, trained["metrics"])]


def _train_and_write_group(runs, tmps, events, features: FeatureSet, progress: Log | None, runs_root) -> list[dict]:
    """fit/trainer.py's _train_and_write and train_loop for stacked seeds; each seed's metrics."""
    manifest = features.manifest
    spec0 = runs[0][0]
    tc = spec0.train
    monitor = monitor_metric(tc.monitor)  # an unknown name: the one-line error
    device = resolve_device(tc.device)
    labels, modality_labels = manifest_labels(manifest)
    roles, train_idx, dev_idx = labeled_rows(spec0, manifest, labels)
    features.load_pooled()
    seeds = []
    for (spec, out), tmp, ev in zip(runs, tmps, events):
        seed_everything(spec.seed)  # as the seed alone: its init, then its RNG state for dropout
        head = create_head(spec.head, features.spec(), len(manifest.classes), spec.head_options).to(device)
        hooks = [] if progress is None else [EpochProgress(tc.max_epochs, tc.monitor, progress,
                                                           prefix=f"seed {spec.seed}: ")]
        hooks += [lambda _, record, tmp=tmp: append_history(tmp, record), *([ev] if ev else [])]
        seeds.append(_Seed(spec, out, head, np.random.default_rng(spec.seed), _RngState.current(device), hooks))
    class_weight = class_weight_for(labels[train_idx], len(manifest.classes), tc.class_weights)
    if class_weight is not None:
        class_weight = class_weight.to(device)
    group = _Group(seeds, features, device)
    optimizer = make_optimizer(seeds[0].head, spec0, list(group.params.values()))
    ids = manifest.ids
    key = monitor.dev_key
    for epoch in range(1, tc.max_epochs + 1):
        t0 = time.time()
        orders = []
        for s in group.active:
            s.sums = {}
            orders.append(epoch_order(train_idx, labels, tc.oversample, s.rng))
            with s.torch_rng.active(device):
                dataloader_draw()  # the train epoch's DataLoader iterator
        order = np.stack(orders)  # [active seeds, train rows]
        n_batches = 0
        for start in range(0, order.shape[1], tc.batch_size):
            group.step(optimizer, order[:, start:start + tc.batch_size], labels, modality_labels, ids, class_weight)
            n_batches += 1
        seconds = round(time.time() - t0, 3)
        records = [{"epoch": epoch, "seconds": seconds,
                    **{f"train_{k}": v / max(n_batches, 1) for k, v in s.sums.items()},
                    "lr_head": optimizer.param_groups[0]["lr"]} for s in group.active]
        if len(dev_idx):
            for s in group.active:
                with s.torch_rng.active(device):
                    dataloader_draw()  # the dev pass's DataLoader iterator (predict_probs)
            probs = group.dev_probs(dev_idx)
        for i, (s, record) in enumerate(zip(group.active, records)):
            if len(dev_idx):
                record.update(dev_scores(labels[dev_idx], probs[i], manifest.classes))
                score = record[key]
            else:  # no labeled dev rows: no early stopping, keep the last epoch
                score = epoch
            s.history.append(record)
            for hook in s.hooks:
                hook(epoch, record)
            if score > s.best_score:
                s.best_score, s.best_epoch, s.best_state = score, epoch, group.state_of(i)
            elif epoch - s.best_epoch >= tc.patience:
                s.stopped = True
        group.drop_stopped(optimizer)
        if not group.active:
            break
    out = []
    for s, tmp in zip(seeds, tmps):
        reason = stop_reason(s.history[-1]["epoch"], s.best_epoch, tc.max_epochs, has_dev=bool(len(dev_idx)))
        for hook in s.hooks:  # as train_epochs tells its hooks
            if callable(getattr(hook, "finished", None)):
                hook.finished(reason)
        s.head.load_state_dict(s.best_state)
        s.history.append({"best_epoch": s.best_epoch, "best_dev_score": s.best_score, "monitor": tc.monitor})
        out.append(write_fit_run(s.spec, features, tmp, s.head, s.history, roles, device, runs_root))
    return out
