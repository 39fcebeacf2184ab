"""Stratified train/dev/test split for datasets that do not come with one.

Deterministic given (ids, labels, seed): rows are grouped by label, sorted by id
(so input order does not matter), shuffled with the seed, and each group is cut at
the requested proportions. Unlabeled rows form their own group.
"""
from __future__ import annotations

import numpy as np

from msa_cache.manifest.schema import SPLITS, ManifestError

DEFAULT_SPLIT = "80/10/10"


def parse_split(spec: str) -> tuple[float, float, float]:
    """'70/10/20' (or '0.7/0.1/0.2') -> train/dev/test fractions summing to 1."""
    try:
        parts = [float(p) for p in str(spec).split("/")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0 or parts[0] == 0:
        raise ManifestError(f"--split '{spec}': expected three train/dev/test shares like 80/10/10 "
                            f"(train must be > 0).")
    total = sum(parts)
    return tuple(p / total for p in parts)


def stratified_split(ids: list[str], labels: list[int | None], fractions: tuple[float, float, float],
                     seed: int = 0) -> list[str]:
    """Split name per row, same order as `ids`."""
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(fractions)[:2]
    out = [""] * len(ids)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(-1 if label is None else int(label), []).append(i)
    for label in sorted(groups):
        members = sorted(groups[label], key=lambda i: ids[i])
        order = rng.permutation(len(members))
        # Rounded cut points per class keep every class's proportions close to the target.
        n_train, n_dev_end = (int(round(c * len(members))) for c in cuts)
        for rank, j in enumerate(order):
            out[members[j]] = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_dev_end else SPLITS[2]
    return out


def split_rule(fractions: tuple[float, float, float], seed: int) -> str:
    """The rule as recorded in the manifest metadata, e.g. 'stratified 70/10/20 seed=0'."""
    shares = "/".join(f"{100 * f:g}" for f in fractions)
    return f"stratified {shares} seed={seed}"
