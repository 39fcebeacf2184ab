"""What is in a manifest: rows per split and label, and the rows flagged as bad."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from msa_cache.manifest.schema import SPLITS, Manifest, read_manifest
from msa_cache.metrics import DEFAULT_MONITOR

UNLABELED = "unlabeled"


@dataclass
class ManifestSummary:
    path: Path | None
    dataset: str
    classes: list[str]
    split_rule: str
    counts: dict[str, dict[str, int]]  # split -> class name (or "unlabeled") -> rows
    bad_rows: list[dict] = field(default_factory=list)  # id, split, image_ok, text_ok, problem
    monitor: str = ""  # the dataset's default dev metric for fit/compare ("" = DEFAULT_MONITOR)
    distinct_images: int = 0  # rows can share an image (Twitter-15/17: one row per target)
    text_pair: bool = False  # rows carry a second text segment (the target)

    @property
    def n_rows(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def split_sizes(self) -> dict[str, int]:
        return {s: sum(c.values()) for s, c in self.counts.items()}

    def format(self, max_listed: int = 20) -> str:
        """Plain-text table for the terminal."""
        cols = self.classes + ([UNLABELED] if any(c.get(UNLABELED) for c in self.counts.values()) else [])
        width = max(8, *(len(c) for c in cols))
        lines = [
            f"{self.path or '(not written)'}: dataset {self.dataset}, {self.n_rows} rows, "
            f"classes {self.classes}, split {self.split_rule}",
            "split   " + "".join(f"{c:>{width + 1}}" for c in cols) + f"{'total':>{width + 1}}",
        ]
        for split, counts in self.counts.items():
            cells = "".join(f"{counts.get(c, 0):>{width + 1}}" for c in cols)
            lines.append(f"{split:<8}{cells}{sum(counts.values()):>{width + 1}}")
        lines.append(f"default monitor {self.monitor or DEFAULT_MONITOR + ' (not set)'}; {self.distinct_images} distinct "
                     f"images" + ("; text pairs (sentence + target)" if self.text_pair else ""))
        lines.append(f"bad rows: {len(self.bad_rows)}")
        lines += list_some([f"  {r['split']} {r['id']}: {r['problem']}" for r in self.bad_rows], max_listed)
        return "\n".join(lines)


def list_some(items: list[str], limit: int) -> list[str]:
    """The first `limit` items, then one line saying how many more there are."""
    return items[:limit] + ([f"  ... and {len(items) - limit} more"] if len(items) > limit else [])


def summarize(manifest: Manifest | str | Path) -> ManifestSummary:
    """Counts per split and label plus the bad rows, for a Manifest or a manifest file."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    names = manifest.classes
    pairs = Counter(zip(manifest.column("split"), manifest.column("label")))
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}  # empty splits shown as 0
    for (split, label), n in sorted(pairs.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        counts[split][UNLABELED if label is None else names[label]] = n
    return ManifestSummary(
        path=manifest.path, dataset=manifest.meta.dataset, classes=names,
        split_rule=manifest.meta.split_rule, counts=counts, bad_rows=manifest.bad_rows(),
        monitor=manifest.meta.monitor, distinct_images=len(set(manifest.column("image"))),
        text_pair=manifest.has_text_pair,
    )
