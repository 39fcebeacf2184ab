"""The common driver: builder -> rows -> image checks -> split -> write -> summary.

Usable without click, e.g. from a notebook:

    from msa_cache.manifest.build import build_manifest
    summary = build_manifest("clmlf", root="../shared/data/mvsa-single",
                             output="manifests/mvsa-single.parquet")
    print(summary.format())
"""
from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msa_cache.manifest.builders import BUILDERS
from msa_cache.manifest.builders.common import (
    DUPLICATE_ID, SKIP_REASONS, Skipped, replace_surrogates, skip_reason,
)
from msa_cache.manifest.images import check_images
from msa_cache.manifest.info import ManifestSummary, list_some, summarize
from msa_cache.metrics import MONITOR_NAMES
from msa_cache.names import check_name
from msa_cache.manifest.schema import (
    Manifest, ManifestError, ManifestMeta, fingerprint_files, rows_to_table, write_manifest,
)
from msa_cache.manifest.splitting import DEFAULT_SPLIT, parse_split, split_rule, stratified_split


@dataclass
class BuildSummary(ManifestSummary):
    """ManifestSummary of the written file, plus what the build left out and why."""
    skipped: list[str] = field(default_factory=list)  # "file:line: why" per input line left out (Skipped)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows left out on purpose
    dropped_bad: list[dict] = field(default_factory=list)  # rows removed by --drop-bad
    rows_read: dict[str, int] = field(default_factory=dict)  # source file -> records read (the builders that count)
    notes: list[str] = field(default_factory=list)  # choices the builder made (e.g. which fold's split files)

    def format(self, max_listed: int = 20) -> str:
        lines = [super().format(max_listed)]
        if self.rows_read:
            read = ", ".join(f"{n} from {name}" for name, n in self.rows_read.items())
            lines.append(f"rows read: {read}; kept {self.n_rows}")
        lines += list(self.notes)
        for reason, n in self.dropped.items():
            lines.append(f"left out {n} rows: {reason}")
        if self.dropped_bad:
            lines.append(f"dropped {len(self.dropped_bad)} bad rows (--drop-bad):")
            lines += list_some([f"  {r['split']} {r['id']}: {r['problem']}" for r in self.dropped_bad], max_listed)
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} input lines:")
            for reason, entries in skips_by_reason(self.skipped).items():
                lines.append(f"  {reason} ({len(entries)}):")
                lines += list_some([f"    {s}" for s in entries], max_listed)
        return "\n".join(lines)


def skips_by_reason(skipped: list[str]) -> dict[str, list[str]]:
    """Skipped lines grouped under their reasons, in SKIP_REASONS order."""
    groups: dict[str, list[str]] = {}
    for s in skipped:
        groups.setdefault(skip_reason(s), []).append(s)
    return {r: groups[r] for r in sorted(groups, key=lambda r: (SKIP_REASONS + (r,)).index(r))}


def _refuse_skips(root: Path, skipped: list[str]) -> None:
    counts = ", ".join(f"{reason} {len(entries)}" for reason, entries in skips_by_reason(skipped).items())
    raise ManifestError(f"{root}: {len(skipped)} input line(s) cannot become rows ({counts}; first: {skipped[0]}); "
                        "fix the source files, or pass --allow-skips to build without them (each is listed)")


def get_builder(fmt: str):
    try:
        return BUILDERS[fmt]
    except KeyError:
        raise ManifestError(f"unknown manifest format '{fmt}'; choose one of {sorted(BUILDERS)}.") from None


def _check_args(fmt: str, builder, args: dict[str, Any]) -> None:
    params = inspect.signature(builder).parameters
    accepted = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ManifestError(f"{fmt}: unknown option(s) {unknown}; it accepts {sorted(accepted)}.")
    missing = sorted(n for n in accepted if params[n].default is inspect.Parameter.empty and n not in args)
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise ManifestError(f"{fmt}: missing required option(s) {flags}.")


def _writable_output(output: Path) -> None:
    """Fail before the (slow) image checks if the manifest cannot be written."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ManifestError(f"{output}: cannot create folder {output.parent} ({e.strerror or e}); "
                            f"pass -o with a writable path.") from None
    if output.is_dir():
        raise ManifestError(f"{output}: is a folder; pass -o with a .parquet file path.")


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _scrub(row: dict) -> dict:
    """A row whose text holds lone surrogates (undecodable input a builder let through): the text
    with U+FFFD in their place, flagged text_ok=False naming the row; an id with them is refused."""
    if _has_surrogate(str(row["id"])):
        raise ManifestError(f"row with id {str(row['id'])!r}: the id holds invalid characters (lone surrogates); "
                            "fix the id in the source data.")
    for key in ("text", "image"):
        value = row.get(key)
        if isinstance(value, str) and _has_surrogate(value):
            row[key] = replace_surrogates(value)
            if key == "text":
                row["text_ok"] = False
            problem = f"{key} of row {row['id']} has invalid characters (lone surrogates, replaced by U+FFFD)"
            row["problem"] = "; ".join(p for p in (row.get("problem"), problem) if p)
    return row


def _dedupe(rows: list[dict], skipped: list[str]) -> list[dict]:
    seen: set[str] = set()
    kept = []
    for r in rows:
        if r["id"] in seen:
            skipped.append(Skipped(f"duplicate id '{r['id']}' ({r['split'] or 'no split'}): kept the first",
                                   DUPLICATE_ID))
            continue
        seen.add(r["id"])
        kept.append(r)
    return kept


def build_manifest(
    fmt: str, root: str | Path, output: str | Path | None = None, *, name: str | None = None,
    split: str | None = None, seed: int = 0, drop_bad: bool = False, workers: int | None = None,
    monitor: str | None = None, allow_skips: bool = False, **builder_args: Any,
) -> BuildSummary:
    """Build and write the manifest of one dataset; raises ManifestError with a one-line reason.

    fmt: a key of BUILDERS ("mvsa", "clmlf", "meme", "hfm", "tmsc", "table").
    output: default manifests/<dataset name>.parquet (relative to the current folder).
    split/seed: stratified split "train/dev/test" shares for datasets without a given split
    (default 80/10/10); an error for datasets that come with their own split.
    drop_bad: leave out rows whose image or text is unusable instead of only flagging them.
    allow_skips: write the manifest even when input lines could not become rows (bad label, missing id or
    label, duplicate id, malformed line); without it such a build is refused before anything is written.
    monitor: the dev metric recorded as the dataset's default --monitor for fit/compare
    (default: the format's, i.e. what its papers report; "table": none, so weighted-F1).
    builder_args: the format's own options (its @cli_options, e.g. image_dir=...); None values are ignored.
    """
    builder = get_builder(fmt)
    builder_args = {k: v for k, v in builder_args.items() if v is not None}
    _check_args(fmt, builder, builder_args)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset root not found or not a folder; pass --root DIR.")
    fractions = parse_split(split or DEFAULT_SPLIT)  # parse early: a typo should not wait for image checks
    if monitor is not None and monitor not in MONITOR_NAMES:
        raise ManifestError(f"--monitor '{monitor}': choose one of {', '.join(MONITOR_NAMES)}.")

    try:
        result = builder(root, **builder_args)
    except OSError as e:
        raise ManifestError(f"{e.filename or root}: cannot read ({e.strerror or e}); check the path and permissions.") from None
    if result.split_given and split is not None:
        raise ManifestError(f"{fmt}: this dataset comes with its own train/dev/test split; drop --split.")
    skipped = list(result.skipped)
    rows = _dedupe([_scrub(r) for r in result.rows], skipped)
    if not rows:
        first = f"; first problem: {skipped[0]}" if skipped else ""
        raise ManifestError(f"{root}: no usable rows for format '{fmt}'{first}.")
    if skipped and not allow_skips:
        _refuse_skips(root, skipped)

    dataset = check_name(result.dataset if name is None else name, "dataset name (--name)")
    output = Path(output) if output is not None else Path("manifests") / f"{dataset}.parquet"
    _writable_output(output)

    for row, (ok, problem) in zip(rows, check_images([root / r["image"] for r in rows], workers)):
        row["image_ok"] = ok
        row["problem"] = "; ".join(p for p in (row.get("problem"), problem) if p)

    rule = "given"
    if not result.split_given:
        # Split before --drop-bad so a row keeps its split whether or not bad rows are dropped.
        assigned = stratified_split([r["id"] for r in rows], [r["label"] for r in rows], fractions, seed)
        for row, s in zip(rows, assigned):
            row["split"] = s
        rule = split_rule(fractions, seed)

    dropped_bad = []
    if drop_bad:
        dropped_bad = [{"id": r["id"], "split": r["split"], "problem": r["problem"]}
                       for r in rows if not (r["image_ok"] and r.get("text_ok", True))]
        rows = [r for r in rows if r["image_ok"] and r.get("text_ok", True)]
        if not rows:
            raise ManifestError(f"{root}: every row has a bad image or text; nothing left after --drop-bad.")

    image_paths = [root / r["image"] for r in result.rows]
    meta = ManifestMeta(
        dataset=dataset, classes=list(result.classes), root=str(root), builder=fmt,
        builder_args={**{k: (str(v) if isinstance(v, Path) else v) for k, v in builder_args.items()},
                      "drop_bad": drop_bad},
        source_fingerprint=fingerprint_files(list(result.sources) + image_paths, root=root),
        split_rule=rule, monitor=monitor or result.monitor,
    )
    table = rows_to_table(rows)
    try:
        path = write_manifest(table, meta, output)
    except OSError as e:
        raise ManifestError(f"{output}: cannot write the manifest ({e.strerror or e}); pass -o with a writable path.") from None

    info = summarize(Manifest(table=table, meta=meta, path=path))
    return BuildSummary(**vars(info), skipped=skipped, dropped=dict(Counter(result.dropped)), dropped_bad=dropped_bad,
                        rows_read=dict(result.rows_read), notes=list(result.notes))
