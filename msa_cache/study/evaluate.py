"""Score finished cached-feature runs again, on their own cached features with one side corrupted
(study/corrupt.py), or on another manifest's caches (transfer): `msa-cache evaluate`.

Each evaluation of a run writes two files into the run folder, each atomically (a reader sees the old
file or the new one, never half of one; an evaluation of the same name is recomputed and replaced):

    RUN/evals/<name>.parquet   id, split, label, pred, prob_<class>: the evaluated rows (labeled dev, labeled test)
    RUN/evals/<name>.json      what was evaluated and its scores per split, with 95% bootstrap intervals

    name   "clean"                               the run's own rows, nothing changed (the reference row)
           "image-drop", "text-noise0.5", ...    a corruption of the run's own rows
           "transfer-<manifest>"                 another manifest's rows
           "transfer-<manifest>-image-drop"      both

Rows scored: on the run's own manifest, the run's recorded roles (its predictions.parquet split
column): a cross-validation fold run's "dev" is its held-out fold; a refit run has no dev rows. On
another manifest, its own split column. Only labeled rows are scored. Fine-tune runs are refused: their
features are computed by the encoders they fine-tuned, so no cache holds them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from msa_cache.cache.schema import config_differences
from msa_cache.errors import UserError
from msa_cache.manifest import Manifest, read_manifest
from msa_cache.metrics import classification_metrics
from msa_cache.names import check_name
from msa_cache.study.corrupt import Corruption, side_modalities
from msa_cache.study.stack import is_stack_folder
from msa_cache.study.stats import BOOTSTRAP_SEED, N_RESAMPLES, bootstrap_scores, percentile_interval
from msa_cache.train.identity import FINETUNE, run_mode
from msa_cache.train.predictions import read_predictions_table
from msa_cache.train.rundir import EVALS_DIR, finished_seeds, is_finished, read_run, run_family

FORMAT = 1
SPLITS = ("dev", "test")
INTERVAL_KEYS = ("accuracy", "macro_f1", "weighted_f1")
# Cache settings that only say which manifest a cache was made from: a transfer ignores them.
MANIFEST_SETTINGS = ("manifest_fingerprint", "manifest_rows", "ids_sha256")
_RUN_HINT = "pass a finished run (runs/<manifest>/<family>/seed-K), a family folder or runs/<manifest>"


# -- which runs -----------------------------------------------------------------------------------------------

def _family_runs(family: Path) -> list[Path]:
    """The finished runs of one family folder: its seed-K runs, or a CV family's fold and refit runs."""
    runs = finished_seeds(family)
    for seed_dir in sorted(p for p in family.glob("seed-*") if p.is_dir() and not is_finished(p)):
        runs += sorted(p for p in seed_dir.iterdir() if p.is_dir() and p.name.startswith(("fold-", "refit"))
                       and is_finished(p))
    return runs


def find_runs(paths: list[str | Path]) -> list[Path]:
    """The finished runs named by `paths`: a run folder (seed-K, or a CV run's fold-k / refit-...), a family
    folder (every finished run in it) or runs/<manifest> (every family). A folder holding none is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError("no such folder", p, _RUN_HINT)
        if is_stack_folder(p) or is_stack_folder(p.parent):
            raise UserError("a stack folder has no head of its own to corrupt or transfer", p,
                            "evaluate its member families (its config.json lists them)")
        if p.name.startswith("seed-") and not (p / "metrics.json").is_file() and ".tmp-" not in p.name \
                and any(p.glob("fold-*")):  # a CV seed folder: its fold (and refit) runs
            found = sorted(q for q in p.iterdir() if q.is_dir() and q.name.startswith(("fold-", "refit"))
                           and is_finished(q))
        elif (p / "metrics.json").is_file() or p.name.startswith(("seed-", "fold-", "refit")):
            read_run(p)  # a half-written or foreign run folder: its one-line refusal
            found = [p]
        else:
            found = _family_runs(p)
            if not found:
                found = [r for family in sorted(q for q in p.iterdir() if q.is_dir()) for r in _family_runs(family)]
        if not found:
            raise UserError("no finished run in this folder", p, _RUN_HINT)
        out += [r for r in found if r not in out]
    return out


def cached_runs(runs: list[Path], explicit: bool) -> tuple[list[Path], list[Path]]:
    """(cached-feature runs, fine-tune runs left out); with `explicit` a fine-tune run is an error."""
    keep, skipped = [], []
    for run in runs:
        if run_mode(read_run(run)) == FINETUNE:
            if explicit:
                raise UserError("a fine-tune run has no cached features to corrupt or transfer", run,
                                "evaluate scores runs of `fit` / `compare` (cached features)")
            skipped.append(run)
        else:
            keep.append(run)
    return keep, skipped


# -- options --------------------------------------------------------------------------------------------------

def parse_class_map(pairs: list[str]) -> dict[str, str]:
    """`--class-map a=b` values (run class -> the other manifest's class) as a dict."""
    out: dict[str, str] = {}
    for pair in pairs:
        a, sep, b = str(pair).partition("=")
        if not sep or not a.strip() or not b.strip():
            raise ValueError(f"--class-map {pair!r}: write RUN_CLASS=OTHER_CLASS, e.g. --class-map neutral=neutral")
        if a.strip() in out:
            raise ValueError(f"--class-map maps '{a.strip()}' twice; give each run class once")
        out[a.strip()] = b.strip()
    return out


def class_index_map(run_classes: list[str], other_classes: list[str], class_map: dict[str, str],
                    other: str) -> np.ndarray:
    """For each run class, the index of the evaluated manifest's class it counts as (by name, or `class_map`);
    ValueError naming the class and --class-map where a class of either side has no counterpart."""
    for a, b in class_map.items():
        if a not in run_classes:
            raise ValueError(f"--class-map {a}={b}: the run has no class '{a}' (its classes: {', '.join(run_classes)})")
        if b not in other_classes:
            raise ValueError(f"--class-map {a}={b}: {other} has no class '{b}' "
                             f"(its classes: {', '.join(other_classes)})")
    index = []
    for c in run_classes:
        target = class_map.get(c, c)
        if target not in other_classes:
            raise ValueError(f"the run's class '{c}' is not a class of {other} ({', '.join(other_classes)}); "
                             f"map it with --class-map {c}=OTHER_CLASS")
        index.append(other_classes.index(target))
    unused = [c for k, c in enumerate(other_classes) if k not in index]
    if unused:
        raise ValueError(f"{other}'s class '{unused[0]}' is not a class of the run ({', '.join(run_classes)}); "
                         f"map a run class to it with --class-map RUN_CLASS={unused[0]}")
    return np.array(index)


# -- features -------------------------------------------------------------------------------------------------

def _open(manifest: Manifest, caches: dict[str, Path], spec):
    from msa_cache.fit.features import open_head_features

    return open_head_features(manifest, caches, spec.head, spec.head_options, spec.train.text_pool)


def _recorded_settings(config: dict, cache_path: str) -> dict | None:
    return next((c.get("settings") for c in config["caches"].values() if c.get("path") == cache_path), None)


def _check_features(run: Path, config: dict, features) -> None:
    """The features opened for a run read the fields it was trained on, with the shapes its head was built for."""
    from dataclasses import asdict

    recorded = config.get("fields")
    if recorded is not None and features.fields_record() != recorded:
        raise UserError(f"the caches now give the fields {features.fields_record()}, the run read {recorded}", run,
                        "evaluate it with the caches it was trained on")
    dims = {k: asdict(v) for k, v in features.spec().items()}
    if dims != config["modalities"]:
        raise UserError(f"the caches' feature shapes {dims} are not the run's {config['modalities']}", run,
                        "evaluate it with caches extracted as its own were")


def own_features(run: Path, config: dict, spec):
    """The run's own manifest and caches, checked to be what it was trained on."""
    from msa_cache.cache.reader import open_cache
    from msa_cache.fit.features import feature_settings

    try:
        manifest = read_manifest(spec.manifest)
    except (FileNotFoundError, OSError):
        raise UserError(f"the manifest the run was trained on ({spec.manifest}) is missing", run,
                        "put it back where the run's config.json says") from None
    if manifest.fingerprint() != config.get("manifest_fingerprint"):
        raise UserError(f"the manifest {spec.manifest} changed since the run was trained", run,
                        "evaluate with the manifest the run was trained on")
    for path in spec.caches.values():
        recorded = _recorded_settings(config, path)
        if recorded is not None and feature_settings(open_cache(path).attrs) != recorded:
            lines = config_differences(recorded, feature_settings(open_cache(path).attrs))
            raise UserError(f"the cache {path} was re-extracted since the run was trained "
                            f"({'; '.join(lines[:2]) or 'settings differ'})", run, "train the run again on it")
    features = _open(manifest, {k: Path(v) for k, v in spec.caches.items()}, spec)
    _check_features(run, config, features)
    return features


def transfer_caches(run: Path, config: dict, spec, other: Manifest, cache_root: str | Path) -> dict[str, Path]:
    """For each cache the run read, OTHER's cache under cache_root extracted with the very same settings
    (encoder, weights, preprocessing, dtype, layers, fields; only the manifest differs). One line naming the
    differing setting, or the missing cache, otherwise."""
    from msa_cache.cache.reader import list_caches, open_cache
    from msa_cache.fit.features import feature_settings

    def comparable(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k not in MANIFEST_SETTINGS}

    available = list_caches(cache_root, check_name(other.name, "manifest name"))
    out = {}
    for role, path in spec.caches.items():
        want = _recorded_settings(config, path) or feature_settings(open_cache(path).attrs)
        candidates = {name: feature_settings(open_cache(p).attrs) for name, p in available.items()}
        same = [name for name, s in candidates.items() if comparable(s) == comparable(want)]
        if same:
            out[role] = available[Path(path).name if Path(path).name in same else same[0]]
            continue
        kind = [name for name, s in candidates.items() if s.get("modality") == want.get("modality")]
        extract = (f"extract it with the run's settings: msa-cache extract --manifest {other.path} "
                   f"--encoder {want.get('encoder')} --out {cache_root}")
        if not kind:
            raise UserError(f"{other.name} has no {want.get('modality')} cache under {Path(cache_root) / other.name} "
                            f"for the run's {want.get('encoder')} cache", run, extract)
        closest = Path(path).name if Path(path).name in kind else kind[0]
        lines = [d for d in config_differences(want, candidates[closest]) if not d.startswith(MANIFEST_SETTINGS)]
        if any(d.startswith("preprocessing.text_pair") for d in lines):  # no extraction changes what a row holds
            extract = ("a run trained on sentence + target pairs transfers only to a manifest with target pairs "
                       "(Twitter-15/17), and a run trained on plain texts only to one without")
        raise UserError(f"{available[closest]} was not extracted as the run's {role} cache "
                        f"({'; '.join(lines[:2]) or 'its settings differ'})", run, extract)
    return out


# -- predicting -----------------------------------------------------------------------------------------------

def split_scores(y: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    """metrics.json's scores of one split, and 95% bootstrap intervals as compare computes them."""
    out = classification_metrics(y, preds, classes)
    boot = bootstrap_scores(y, preds[None], len(classes), N_RESAMPLES, BOOTSTRAP_SEED)
    out["interval"] = {k: list(percentile_interval(boot[k])) for k in INTERVAL_KEYS}
    return out


# -- one run --------------------------------------------------------------------------------------------------

@dataclass
class Target:
    """What a run is evaluated on: a manifest's features, the rows per split, the class map."""

    manifest: Manifest
    features: object  # FeatureSet
    rows: dict[str, np.ndarray]  # split -> manifest positions (labeled)
    transfer: bool
    class_index: np.ndarray  # run class -> evaluated class
    class_map: dict[str, str] | None


def evaluation_name(corruption: Corruption | None, target: Target) -> str:
    base = f"transfer-{target.manifest.name}" if target.transfer else None
    if corruption is None:
        return base or "clean"
    return f"{base}-{corruption.name}" if base else corruption.name


def recorded_roles(run: Path, manifest: Manifest) -> np.ndarray:
    """Each manifest row's role in the run, as its predictions.parquet recorded it."""
    t = read_predictions_table(run, ["id", "split"])
    roles = dict(zip(t["id"], t["split"]))
    ids = manifest.ids
    if len(roles) != len(ids) or any(i not in roles for i in ids):
        raise UserError("predictions.parquet does not list the rows of the run's manifest", run / "predictions.parquet",
                        "delete this run folder and train it again")
    return np.array([roles[i] for i in ids], dtype=object)


class NothingToScore(UserError):
    """A run without labeled dev or test rows: an error when it is named, left out (with a note) when a
    folder holds it (a refit run on a manifest whose test split is unlabeled)."""


def _labeled(roles: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    return {s: rows for s in SPLITS if len(rows := np.flatnonzero((roles == s) & (labels >= 0)))}


def plan_target(run: Path, config: dict, spec, features, other: Manifest | None, cache_root, class_map) -> Target:
    """The rows and features a run is scored on (its own, or `other`'s); refused in one line when there are none."""
    run_classes = list(config["classes"])
    if other is None:
        rows = _labeled(recorded_roles(run, features.manifest), features.manifest.labels("label"))
        if not rows:
            raise NothingToScore("the run has no labeled dev or test rows to score (a refit run has no dev rows, and "
                            "this manifest's test rows are unlabeled)", run, "evaluate its fold runs instead")
        return Target(features.manifest, features, rows, False, np.arange(len(run_classes)), None)
    if other.fingerprint() == features.manifest.fingerprint():
        raise UserError(f"--manifest {other.path} is the run's own manifest", run, "leave --manifest out")
    index = class_index_map(run_classes, other.classes, class_map, f"--manifest {other.name}")
    target_features = _open(other, transfer_caches(run, config, spec, other, cache_root), spec)
    _check_features(run, config, target_features)
    rows = _labeled(np.array(other.column("split"), dtype=object), other.labels("label"))
    if not rows:
        raise UserError("the manifest has no labeled dev or test rows", other.path, "label some, or pick another")
    return Target(other, target_features, rows, True, index, dict(class_map) or None)


def evaluate_run(run: Path, corruptions: list[Corruption], other: Manifest | None = None,
                 cache_root: str | Path = "cache", class_map: dict[str, str] | None = None, device: str = "auto",
                 command: str | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Score one finished cached-feature run: the reference evaluation (clean, or transfer-<manifest>) and
    one per corruption; write RUN/evals/<name>.{parquet,json}. The JSON paths written."""
    from msa_cache.device import resolve_device
    from msa_cache.finished_run import load_run
    from msa_cache.fit.config import RunSpec

    run = Path(run)
    config = read_run(run)
    if run_mode(config) == FINETUNE:
        raise UserError("a fine-tune run has no cached features to corrupt or transfer", run,
                        "evaluate scores runs of `fit` / `compare` (cached features)")
    spec = RunSpec.from_dict(config["spec"])
    features = own_features(run, config, spec)
    target = plan_target(run, config, spec, features, other, cache_root, class_map or {})
    head, _ = load_run(run)
    dev = resolve_device(device)
    head.to(dev)
    amp = bool(spec.train.amp)

    stds = None
    if any(c.kind == "noise" for c in corruptions):
        roles = recorded_roles(run, features.manifest)
        train = np.flatnonzero((roles == "train") & (features.manifest.labels("label") >= 0))
        sides = sorted({c.side for c in corruptions if c.kind == "noise"})
        stds = feature_stds_for(features, train, sides, head.uses_tokens)
    from msa_cache.fit.trainer import predict_probs
    from msa_cache.study.corrupt import Corrupter

    written = []
    for corruption in [None, *corruptions]:
        name = check_name(evaluation_name(corruption, target), "evaluation name")
        probs, splits = {}, {}
        for split, rows in target.rows.items():
            transform = None if corruption is None else Corrupter(corruption, head, target.features, rows, stds)
            p = predict_probs(head, target.features, rows, dev, amp=amp, transform=transform)
            probs[split] = _mapped(p, target.class_index, len(target.manifest.classes))
            y = target.manifest.labels("label")[rows]
            splits[split] = split_scores(y, probs[split].argmax(1), target.manifest.classes)
        record = _record(run, features.manifest.name, spec, name, corruption, target, splits, command)
        written.append(write_evaluation(run, name, record, target, probs))
        shown = "  ".join(f"{s} {config['spec']['train'].get('monitor')} {m[_monitor_key(config)]:.4f}"
                          for s, m in splits.items())
        log(f"{name:<28} {shown}  {run}")
    from msa_cache.study.share import write_card

    write_card(run)  # its model card lists the evaluations
    return written


def feature_stds_for(features, rows: np.ndarray, sides: list[str], with_tokens: bool) -> dict:
    from msa_cache.study.corrupt import feature_stds

    mods = [m for side in sides for m in side_modalities(features.modalities, side)]
    return feature_stds(features, rows, mods, with_tokens)


def _monitor_key(config: dict) -> str:
    from msa_cache.metrics import DEFAULT_MONITOR, monitor_key

    return monitor_key(config["spec"]["train"].get("monitor") or DEFAULT_MONITOR)


def _mapped(probs: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """Run-class probabilities as the evaluated manifest's classes: run classes mapped to one class add up."""
    out = np.zeros((len(probs), k), dtype=np.float64)
    for r, o in enumerate(index):
        out[:, o] += probs[:, r]
    return out


def _record(run: Path, train_manifest: str, spec, name: str, corruption: Corruption | None, target: Target,
            splits: dict, command: str | None) -> dict:
    from msa_cache.metrics import DEFAULT_MONITOR
    from msa_cache.provenance import library_versions

    kind = "transfer" if target.transfer else ("clean" if corruption is None else "corruption")
    return {
        "format": FORMAT, "name": name, "kind": kind,
        "corruption": None if corruption is None else corruption.record(),
        "run": {"path": str(run), "family": run_family(run).name, "head": spec.head, "seed": spec.seed,
                "manifest": train_manifest,
                "fold": spec.cv_fold if spec.cv_folds and spec.refit is None else None,
                "refit": spec.refit is not None},
        "manifest": {"name": target.manifest.name, "path": str(target.manifest.path),
                     "fingerprint": target.manifest.fingerprint()},
        "class_map": target.class_map, "classes": list(target.manifest.classes),
        "monitor": spec.train.monitor or DEFAULT_MONITOR,
        "splits": splits,
        "versions": library_versions(), "command": command,
    }


def write_evaluation(run: Path, name: str, record: dict, target: Target, probs: dict[str, np.ndarray]) -> Path:
    """RUN/evals/<name>.parquet, then <name>.json, each written aside and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msa_cache.atomic import write_atomic, write_text_atomic

    folder = run / EVALS_DIR
    folder.mkdir(exist_ok=True)
    labels, ids = target.manifest.labels("label"), target.manifest.ids
    order = [(s, r) for s in target.rows for r in target.rows[s]]
    p = np.concatenate([probs[s] for s in target.rows])
    cols = {"id": pa.array([ids[r] for _, r in order], pa.string()),
            "split": pa.array([s for s, _ in order], pa.string()),
            "label": pa.array([int(labels[r]) for _, r in order], pa.int64()),
            "pred": pa.array(p.argmax(1).astype(np.int64))}
    for c, cls in enumerate(target.manifest.classes):
        cols[f"prob_{cls}"] = pa.array(p[:, c].astype(np.float32))
    write_atomic(folder / f"{name}.parquet", lambda tmp: pq.write_table(pa.table(cols), tmp))
    return write_text_atomic(folder / f"{name}.json", json.dumps(record, indent=2) + "\n")


# -- many runs ------------------------------------------------------------------------------------------------

def evaluate(paths: list[str | Path], corruptions: list[Corruption] = (), manifest: str | Path | None = None,
             cache_root: str | Path = "cache", class_map: dict[str, str] | None = None, device: str = "auto",
             command: str | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Evaluate every finished cached run named by `paths` (see find_runs; fine-tune runs found in a folder
    are left out with a note, one named directly is refused). Every run is checked before any file is
    written. The JSON paths written."""
    names = [c.name for c in corruptions]
    if len(set(names)) != len(names):
        raise ValueError(f"--corrupt gives the same corruption twice ({', '.join(names)})")
    if class_map and manifest is None:
        raise ValueError("--class-map goes with --manifest (the classes of another manifest)")
    runs = find_runs(paths)
    explicit = all((Path(p) / "metrics.json").is_file() for p in paths)
    runs, skipped = cached_runs(runs, explicit)
    if skipped:
        log(f"left out {len(skipped)} fine-tune run(s) (no cached features), e.g. {skipped[0]}")
    if not runs:
        raise UserError("no cached-feature runs to evaluate", ", ".join(map(str, paths)), _RUN_HINT)
    other = None if manifest is None else read_manifest(manifest)
    # Refusals (a stale manifest, a transfer cache that does not match, a class without counterpart) come
    # before any evaluation is written: every run is planned first.
    from msa_cache.fit.config import RunSpec

    unscored = []
    for run in list(runs):
        config = read_run(run)
        spec = RunSpec.from_dict(config["spec"])
        try:
            plan_target(run, config, spec, own_features(run, config, spec), other, cache_root, class_map or {})
        except NothingToScore:
            if explicit:
                raise
            runs.remove(run)
            unscored.append(run)
    if unscored:
        log(f"left out {len(unscored)} run(s) with no labeled dev or test rows (refit runs on an unlabeled "
            f"test split), e.g. {unscored[0]}")
    if not runs:
        raise UserError("no run with labeled dev or test rows to evaluate", ", ".join(map(str, paths)), _RUN_HINT)
    written = []
    for run in runs:
        written += evaluate_run(run, list(corruptions), other, cache_root, class_map, device, command, log)
    return written
