"""The linear probe: multinomial logistic regression on concatenated pooled features.

    x = [x_1; ...; x_N]                      (pooled features, modalities in sorted order)
    x̂ = (x - mu) / sigma                     (standardised with train statistics)
    p(y | x) = softmax(W x̂ + b)
    (W, b) = argmin  sum_n -log p(y_n | x_n) + 1/(2C) ||W||^2      (sklearn, lbfgs)

with C picked on dev from a log grid. This is the reference every head has to
beat: if a fusion head cannot out-score a linear map of the same cached
features, its extra machinery buys nothing.

It is fitted in closed form (`fit_mode = "closed_form"`): the trainer calls
`fit_closed_form(...)` instead of running SGD. The fitted coefficients are
copied into an ordinary `nn.Linear` and the standardisation into buffers, so
saving, loading and predicting work exactly as for any other head, and
`forward` returns sklearn's `decision_function` (for two classes sklearn has
one score s; the head returns [-s/2, s/2], whose softmax is sklearn's
`predict_proba` and whose difference is s).

A missing modality's features are its train mean (its block of x̂ is 0, the
standardised mean): the probe's own neutral input, which leaves only the present
modalities' terms in W x̂. With `--modality-dropout P` the probe minimises the
expected loss of modality dropout in closed form: every train row enters three
times, as itself with weight 1 - P and with each side missing with weight P/2
(sklearn's sample_weight), so the total weight, and with it the meaning of C,
stays that of the plain fit. C is still picked on the intact dev rows.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from msa_cache.heads.base import (Batch, Head, HeadOutput, ModalityInput, ModalitySpec, head_model, modality_side,
                                  zeros_missing)
from msa_cache.heads.catalog import ProbeConfig

# Bias given to a class that never occurs in the training labels: sklearn has no
# row for it, and it should never be predicted.
_ABSENT_CLASS_BIAS = -1e4


def _parse_grid(text: str) -> list[float]:
    try:
        grid = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"c_grid must be comma-separated numbers, got {text!r}") from None
    if not grid or any(c <= 0 for c in grid):
        raise ValueError(f"c_grid needs at least one positive C, got {text!r}")
    return grid


def _sklearn_class_weight(class_weight, num_classes: int):
    """None / "balanced" / {class: w} pass through; a per-class sequence or tensor becomes a dict."""
    if class_weight is None or isinstance(class_weight, (str, dict)):
        return class_weight
    w = np.asarray(class_weight.detach().cpu() if torch.is_tensor(class_weight) else class_weight, dtype=float)
    if w.shape != (num_classes,):
        raise ValueError(f"class_weight has shape {w.shape}, expected ({num_classes},)")
    return {c: float(w[c]) for c in range(num_classes)}


@head_model("probe")
class ProbeHead(Head):

    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: ProbeConfig):
        super().__init__(spec, num_classes, cfg)
        self.grid = _parse_grid(cfg.c_grid)
        # Sorted so the column order of W never depends on dict order.
        self.mods = sorted(spec)
        dim = sum(spec[m].pooled_dim for m in self.mods)
        ends = np.cumsum([spec[m].pooled_dim for m in self.mods])
        self.columns = {m: slice(int(end - spec[m].pooled_dim), int(end)) for m, end in zip(self.mods, ends)}
        # Identity standardisation until fitted: the head is also trainable by SGD.
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, num_classes)

    def _concat(self, x: dict[str, np.ndarray]) -> np.ndarray:
        missing = [m for m in self.mods if m not in x]
        if missing:
            raise ValueError(f"probe needs pooled features for {self.mods}; missing {missing}")
        return np.concatenate([np.asarray(x[m], dtype=np.float64) for m in self.mods], axis=1)

    def forward(self, batch: Batch) -> HeadOutput:
        x = torch.cat([batch.inputs[m].pooled.float() for m in self.mods], dim=1)
        return HeadOutput(self.linear((x - self.mean) / self.std))

    def missing_input(self, modality: str, inp: ModalityInput, rows: torch.Tensor) -> ModalityInput:
        """The train mean of the modality's pooled features (0 once standardised) in `rows`."""
        out = zeros_missing(inp, rows)
        if modality not in self.columns:  # not read by the probe
            return out
        mean = self.mean[self.columns[modality]].to(inp.pooled.dtype)
        return ModalityInput(torch.where(rows.unsqueeze(-1), mean, inp.pooled), out.tokens, out.mask)

    def _with_sides_missing(self, x: np.ndarray, y: np.ndarray, p: float):
        """Standardised train rows as modality dropout sees them on average: (x, y, sample weights) with x
        itself weighted 1 - p and, per droppable side, a copy with that side's columns at 0 (the train mean)
        weighted p / sides. No sides or p = 0: x and y as given, no weights."""
        sides = self.droppable_sides()
        if not p or not sides:
            return x, y, None
        copies, weights = [x], [np.full(len(x), 1.0 - p)]
        for side in sides:
            copy = x.copy()
            for m in self.mods:
                if modality_side(m) == side:
                    copy[:, self.columns[m]] = 0.0
            copies.append(copy)
            weights.append(np.full(len(x), p / len(sides)))
        return np.concatenate(copies), np.tile(y, len(copies)), np.concatenate(weights)

    def fit_closed_form(
        self,
        train_x: dict[str, np.ndarray],
        train_y,
        dev_x: dict[str, np.ndarray],
        dev_y,
        monitor_fn: Callable[[np.ndarray, np.ndarray], float],
        class_weight=None,
        seed: int = 0,
        modality_dropout: float = 0.0,
    ) -> dict:
        """Sweep C on the grid, keep the C with the best `monitor_fn(y_true, y_pred)` on dev
        (ties -> the smaller C, i.e. the stronger penalty), and load it into this module.
        modality_dropout P > 0: fit the expected loss with each side missing with probability P/2
        (see the module doc).

        Rows labelled -1 (unlabeled) are ignored. Returns {"C", "dev_scores", "not_converged"}.
        """
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        xtr, ytr = self._concat(train_x), np.asarray(train_y).astype(int)
        xdv, ydv = self._concat(dev_x), np.asarray(dev_y).astype(int)
        mean = xtr.mean(axis=0)
        std = xtr.std(axis=0)
        std[std < 1e-8] = 1.0  # constant features: leave them centred, don't divide by ~0
        keep_tr, keep_dv = ytr >= 0, ydv >= 0
        xtr, ytr = (xtr[keep_tr] - mean) / std, ytr[keep_tr]
        xdv, ydv = (xdv[keep_dv] - mean) / std, ydv[keep_dv]
        if len(np.unique(ytr)) < 2:
            raise ValueError("probe needs at least two classes among the labeled training rows")
        if len(ydv) == 0:
            raise ValueError("probe needs labeled dev rows to choose C")
        cw = _sklearn_class_weight(class_weight, self.num_classes)
        xtr, ytr, weight = self._with_sides_missing(xtr, ytr, modality_dropout)

        scores: dict[float, float] = {}
        not_converged: list[float] = []
        best = None  # (score, C, fitted model)
        for c in sorted(self.grid):
            clf = LogisticRegression(C=c, solver="lbfgs", max_iter=self.cfg.max_iter, class_weight=cw, random_state=seed)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf.fit(xtr, ytr, sample_weight=weight)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                not_converged.append(c)
            scores[c] = float(monitor_fn(ydv, clf.predict(xdv)))
            if best is None or scores[c] > best[0]:
                best = (scores[c], c, clf)

        _, best_c, clf = best
        self._load_sklearn(clf, mean, std)
        return {"C": best_c, "dev_scores": scores, "not_converged": not_converged}

    @torch.no_grad()
    def _load_sklearn(self, clf, mean: np.ndarray, std: np.ndarray) -> None:
        """Copy a fitted LogisticRegression into `linear` (rows indexed by class id)."""
        d = self.linear.in_features
        weight = np.zeros((self.num_classes, d))
        bias = np.full(self.num_classes, _ABSENT_CLASS_BIAS)
        classes = clf.classes_.astype(int)
        if classes.max() >= self.num_classes:
            raise ValueError(f"label {classes.max()} out of range for {self.num_classes} classes")
        if len(classes) == 2:
            # Binary sklearn keeps one score s for classes[1]; split it symmetrically.
            s_w, s_b = clf.coef_[0], clf.intercept_[0]
            weight[classes[0]], bias[classes[0]] = -s_w / 2, -s_b / 2
            weight[classes[1]], bias[classes[1]] = s_w / 2, s_b / 2
        else:
            weight[classes], bias[classes] = clf.coef_, clf.intercept_
        self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))
