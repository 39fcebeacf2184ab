"""Run directories on disk: build one atomically, tell finished from unfinished, list the finished
seeds of a family, and read one back only after validating it (the one place that does).

    runs/<manifest>/<family>/seed-K/          finished: renamed from its tmp folder after
        config.json command.yaml history.jsonl  metrics.json (the marker, written last)
        predictions.parquet confusion.png model.safetensors (runs made before it: model.pt)
        README.md (the model card, train/card.py; runs made before it have none: `msa-cache card`)
    runs/<manifest>/<family>/seed-K.tmp-PID/  being built by process PID (or left by a killed one);
        history.jsonl grows there one epoch at a time (append_history)

`write_run` writes the files (metrics.json last), `read_run` / `load_weights` read them back.
Only `seed-K` folders holding the marker count as runs: never a tmp folder, even one that got as
far as metrics.json before its process was killed. Tmp folders of processes that are gone (on
this host) are removed when the next run is built in the same family.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
import math
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from msa_cache.atomic import stale_temporaries
from msa_cache.errors import UserError
from msa_cache.manifest import Manifest
from msa_cache.settings import shown
from msa_cache.train.card import model_card
from msa_cache.train.command import write_command
from msa_cache.train.identity import FINETUNE, run_mode
from msa_cache.metrics import METRIC_KEYS, classification_metrics

FINISHED_MARKER = "metrics.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
CARD_FILE = "README.md"
WEIGHTS_FILE = "model.safetensors"
EVALS_DIR = "evals"  # `msa-cache evaluate`: one <name>.json (+ .parquet predictions) per evaluation
LEGACY_WEIGHTS_FILE = "model.pt"  # older runs: a torch pickle, still read (weights_only)
_SEED_DIR = re.compile(r"seed-(\d+)")
_TMP_DIR = re.compile(r"seed-\d+\.tmp-(\d+)")

# Bounds a plausible run never reaches; beyond them a config.json is refused before anything is built.
MAX_DIM = 1 << 16  # feature width or token count
MAX_CLASSES = 10_000
MAX_JSON_BYTES = 64 << 20  # config.json, metrics.json: a few KB in a real run

_RETRAIN = "delete this run folder and train it again"


@dataclass
class RunResult:
    """A run as the trainers and `compare` report it: its folder, metrics.json, and whether it was
    already finished (skipped) or trained now (seconds)."""

    path: Path
    metrics: dict
    skipped: bool
    seconds: float = 0.0


def is_finished(path: str | Path) -> bool:
    """A finished run directory: named seed-K (not a tmp folder) and holding the marker."""
    path = Path(path)
    return _TMP_DIR.fullmatch(path.name) is None and (path / FINISHED_MARKER).is_file()


def finished_seeds(family: str | Path) -> list[Path]:
    """The finished `seed-K` directories of one run family, by seed."""
    family = Path(family)
    if not family.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in family.iterdir()
             if (m := _SEED_DIR.fullmatch(p.name)) and p.is_dir() and is_finished(p)]
    return [p for _, p in sorted(found)]


def run_family(run: str | Path) -> Path:
    """The family folder of a finished run: seed-K's parent, or a CV fold's or refit's grandparent."""
    run = Path(run)
    return run.parent if run.name.startswith("seed-") else run.parent.parent


def stale_tmp_dirs(family: str | Path) -> list[Path]:
    """Tmp folders in a family whose process is gone (a kill -9, a crash, a power cut)."""
    return [p for p in stale_temporaries(family, _TMP_DIR) if p.is_dir()]


def sweep_stale_tmp(family: str | Path) -> list[Path]:
    """Remove the stale tmp folders of a family; the removed paths."""
    removed = []
    for p in stale_tmp_dirs(family):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def build_run_dir(out: Path, work: Callable[[Path], dict]) -> dict:
    """Run `work(tmp)` in a temporary sibling of `out` and rename it to `out` once complete."""
    sweep_stale_tmp(out.parent)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    created = [p for p in reversed(tmp.parents) if not p.exists()]
    tmp.mkdir(parents=True)
    try:
        metrics = work(tmp)
        if out.exists():  # a concurrent process finished first; keep its result
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):  # a failed first run leaves no empty family folder behind
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: another run lives there now
        raise
    return metrics


def write_run(out: Path, manifest: Manifest, probs: np.ndarray, state_dict: dict, history: list[dict],
              config: dict, title: str, splits: np.ndarray | None = None, baseline_paper: str = "") -> dict:
    """A run directory's files from the selected model's probabilities for every manifest row
    (shared by cached-feature and fine-tune runs); metrics.json is written last.

    splits: each row's role in this run (default: the manifest's split; a cross-validation
    fold's held-out rows are its "dev"); metrics and the predictions' split column use it.
    baseline_paper: a fine-tune baseline's paper, for its model card."""
    out.mkdir(parents=True, exist_ok=True)  # a long fine-tune writes only now; its folder may have been swept
    labels = manifest.labels("label")
    splits = np.array(manifest.column("split")) if splits is None else np.asarray(splits)
    classes = manifest.classes
    preds = probs.argmax(1)
    metrics = {}
    for split in ("train", "dev", "test"):
        m = (splits == split) & (labels >= 0)
        if m.any():
            metrics[split] = classification_metrics(labels[m], preds[m], classes)

    _write_predictions(out / "predictions.parquet", manifest, splits, labels, preds, probs, classes)
    save_weights(state_dict, out / WEIGHTS_FILE)
    with open(out / HISTORY_FILE, "w") as f:  # whole, replacing the per-epoch appends (append_history)
        for h in history:
            f.write(json.dumps(h, default=float) + "\n")
    text = json.dumps(config, indent=2, default=str)
    (out / "config.json").write_text(text)
    # The options that reproduce the run (`--config command.yaml`), from config.json as it reads back, so
    # `--config config.json` gives the very same options.
    write_command(out, json.loads(text))
    if "dev" in metrics:
        plot_confusion(np.array(metrics["dev"]["confusion"]), classes, out / "confusion.png", title=title)
    (out / CARD_FILE).write_text(model_card(config, metrics, baseline_paper), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))  # last: marks the run finished
    return metrics


def read_history(run: str | Path) -> list[dict]:
    """The epoch records of a run's history.jsonl (its last record: best_epoch, best_dev_score, monitor)."""
    text = (Path(run) / HISTORY_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def append_history(folder: Path, record: dict) -> None:
    """Append one epoch record to the history.jsonl of a run being built (its tmp folder), so a watcher
    sees training progress; write_run rewrites the file whole at the end."""
    Path(folder).mkdir(parents=True, exist_ok=True)  # as write_run: a long run's folder may have been swept
    with open(Path(folder) / HISTORY_FILE, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")
        f.flush()


def save_weights(state_dict: dict, path: str | Path) -> None:
    """Write a state dict as safetensors (the format of model.safetensors)."""
    from safetensors.torch import save_file

    # Cloned: safetensors refuses tensors that share storage (tied weights) or are non-contiguous views.
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}, str(path),
              metadata={"format": "pt"})
    # safetensors writes 0600; give the weights the mode every other file of the run gets (umask applied),
    # so on a shared file system whoever can read the run can load it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def weights_file(run: str | Path) -> Path | None:
    """The run's weights file: model.safetensors, else an older run's model.pt, else None."""
    for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE):
        if (Path(run) / name).is_file():
            return Path(run) / name
    return None


def _write_predictions(path, manifest, splits, labels, preds, probs, classes) -> None:
    cols = {
        "id": pa.array(manifest.ids, pa.string()),
        "split": pa.array(splits.tolist(), pa.string()),
        "label": pa.array([None if v < 0 else int(v) for v in labels], pa.int64()),
        "pred": pa.array(preds.astype(np.int64)),
    }
    for c, name in enumerate(classes):
        cols[f"prob_{name}"] = pa.array(probs[:, c].astype(np.float32))
    pq.write_table(pa.table(cols), path)


def confusion_figure(cm: np.ndarray, classes: list[str], title: str = "", ax=None):
    """A confusion matrix (rows true, columns predicted) drawn by sklearn's ConfusionMatrixDisplay:
    counts in the cells, Blues colour map. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # labels are data (class, family names): a $ is text
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    cm = np.asarray(cm)
    integral = np.issubdtype(cm.dtype, np.integer) or bool(np.all(cm == np.round(cm)))
    disp = ConfusionMatrixDisplay(cm.astype(np.int64) if integral else cm, display_labels=classes)
    disp.plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d" if integral else ".2f")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def plot_confusion(cm: np.ndarray, classes: list[str], path, title: str = "") -> None:
    """confusion_figure saved as a PNG to `path` (a file path or a binary file object)."""
    import matplotlib.pyplot as plt

    fig = confusion_figure(cm, classes, title)
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)


def _read_json_object(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)  # never more: a tampered file may be huge, or /dev/zero
        if len(raw) > MAX_JSON_BYTES:
            raise UserError(f"{what} is larger than {MAX_JSON_BYTES >> 20} MB", path, _RETRAIN)
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} is missing", path, _RETRAIN) from None
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
        raise UserError(f"{what} is unreadable ({type(e).__name__})", path, _RETRAIN) from None
    if not isinstance(data, dict):
        raise UserError(f"{what} is not a JSON object", path, _RETRAIN)
    return data


def read_metrics(run: str | Path) -> dict:
    """metrics.json of a finished run: {split: {metric: value}}."""
    run = Path(run)
    metrics = _read_json_object(run / FINISHED_MARKER, FINISHED_MARKER)
    for split, m in metrics.items():
        if not isinstance(m, dict):
            raise UserError(f"{FINISHED_MARKER}: '{split}' is not an object", run / FINISHED_MARKER, _RETRAIN)
        for key in METRIC_KEYS:
            v = m.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise UserError(f"{FINISHED_MARKER}: {split} {key} is not a number", run / FINISHED_MARKER, _RETRAIN)
    return metrics


EVALUATION_FIELDS = ("format", "name", "kind", "corruption", "run", "manifest", "classes", "monitor", "splits")


def read_evaluation(path: str | Path) -> dict:
    """One RUN/evals/<name>.json that `msa-cache evaluate` wrote (study/evaluate.py), checked for the
    fields a card, a report or the evaluation table reads: a tampered file is one line, not a traceback."""
    path = Path(path)
    redo = "delete it, or run `msa-cache evaluate` on the run again"
    data = _read_json_object(path, "evaluation")
    splits, manifest = data.get("splits"), data.get("manifest")
    if not (data.get("format") == 1 and all(k in data for k in EVALUATION_FIELDS)
            and isinstance(data["name"], str) and data["kind"] in ("clean", "corruption", "transfer")
            and isinstance(manifest, dict) and isinstance(manifest.get("name"), str)
            and isinstance(splits, dict) and all(isinstance(m, dict) for m in splits.values())):
        raise UserError("evaluation: not one `msa-cache evaluate` wrote (format 1)", path, redo)
    for split, m in splits.items():
        for key in METRIC_KEYS:
            v = m.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise UserError(f"evaluation: {split} {key} is not a number", path, redo)
    return data


def read_evaluations(run: str | Path) -> list[dict]:
    """The evaluations written into a run (evals/<name>.json), by name; [] when none."""
    return [read_evaluation(p) for p in sorted((Path(run) / EVALS_DIR).glob("*.json"))]


def _require(cond: bool, what: str, path: Path) -> None:
    if not cond:
        raise UserError(f"config.json: {what}", path, _RETRAIN)


def _size(value, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DIM


def _check_head(spec: dict, path: Path, required: bool = True) -> None:
    from msa_cache.heads.registry import HEADS, make_config

    head, options = spec.get("head"), spec.get("head_options", {})
    if not required and head not in HEADS:
        return  # a fine-tune baseline (clip, visualbert): its own model, no registry head
    _require(isinstance(head, str) and head in HEADS, f"spec.head {shown(head)} is not a known head", path)
    _require(isinstance(options, dict), "spec.head_options is not an object", path)
    try:
        make_config(head, options)
    except (ValueError, TypeError) as e:
        raise UserError(f"config.json: {e}", path, _RETRAIN) from None


def validate_run_config(config: dict, path: Path) -> dict:
    """Check a run's config.json holds what rebuilding its model needs, within sane sizes."""
    classes = config.get("classes")
    _require(isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES
             and all(isinstance(c, str) for c in classes), "'classes' must list 2 or more class names", path)
    spec = config.get("spec")
    _require(isinstance(spec, dict), "'spec' is missing or not an object", path)
    fields = config.get("fields")  # absent in runs made before it was recorded
    _require(fields is None or (isinstance(fields, dict) and all(
        isinstance(f, dict) and isinstance(f.get("pooled"), str)
        and all(f.get(k) is None or isinstance(f.get(k), str) for k in ("tokens", "mask")) for f in fields.values())),
        "'fields' must map each modality to its pooled/tokens/mask field names", path)
    if run_mode(config) == FINETUNE:
        encoders = config.get("encoders")
        _require(isinstance(encoders, dict) and encoders and all(
            isinstance(r, dict) and isinstance(r.get("encoder"), str) for r in encoders.values()),
            "'encoders' must map each role to a recorded encoder", path)
        _require(isinstance(spec.get("train"), dict) and isinstance(spec.get("encoders"), list)
                 and isinstance(spec.get("manifest"), str), "'spec' lacks manifest/encoders/train", path)
        _check_head(spec, path, required=spec.get("baseline") is None)
        return config
    _check_head(spec, path)
    _require(isinstance(spec.get("manifest"), str) and isinstance(spec.get("caches"), dict)
             and isinstance(spec.get("train"), dict), "'spec' lacks manifest/caches/train", path)
    modalities = config.get("modalities")
    _require(isinstance(modalities, dict) and modalities, "'modalities' is missing or empty", path)
    for name, m in modalities.items():
        _require(isinstance(m, dict) and set(m) <= {"pooled_dim", "token_dim", "num_tokens"}
                 and _size(m.get("pooled_dim")) and _size(m.get("token_dim"), True)
                 and _size(m.get("num_tokens"), True),
                 f"modality '{name}' needs pooled_dim (and token_dim, num_tokens) between 1 and {MAX_DIM}", path)
    caches = config.get("caches")
    _require(isinstance(caches, dict) and all(
        isinstance(c, dict) and isinstance(c.get("path"), str) and isinstance(c.get("fields"), list)
        and len(c["fields"]) == 2 for c in caches.values()), "'caches' must record each cache's path and fields", path)
    named = set(modalities)  # every per-modality record names the same modalities (predict looks each up)
    for what, record in (("caches", caches), ("spec.caches", spec["caches"]), ("fields", fields),
                         ("encoders", config.get("encoders") or None)):
        _require(record is None or (isinstance(record, dict) and set(record) == named),
                 f"'{what}' names modalities {shown(sorted(map(str, record)) if isinstance(record, dict) else record)}"
                 f", 'modalities' names {sorted(named)}", path)
    for name, c in caches.items():
        recorded = (c.get("settings") or {}).get("fields") if isinstance(c.get("settings"), dict) else None
        pooled, tokens = c["fields"]  # tokens: None for a pooled-only cache
        _require(isinstance(pooled, str) and (tokens is None or isinstance(tokens, str)) and pooled != tokens
                 and (not isinstance(recorded, dict) or all(f in recorded for f in (pooled, tokens) if f)),
                 f"caches.{shown(name)}.fields must name its pooled and token fields, two of those its cache "
                 "settings record", path)
    return config


def read_run(run: str | Path) -> dict:
    """A finished run's validated config.json (UserError, one line, for anything unusable)."""
    run = Path(run)
    if not run.is_dir():
        raise UserError("no such run directory", run, "pass runs/<manifest>/<run>/seed-K")
    if not is_finished(run):
        raise UserError("not a finished run directory (no metrics.json, or an unfinished .tmp folder)", run,
                        "pass runs/<manifest>/<run>/seed-K of a finished run")
    read_metrics(run)
    config = _read_json_object(run / CONFIG_FILE, CONFIG_FILE)
    return validate_run_config(config, run / CONFIG_FILE)


def _read_state(path: Path) -> dict:
    import torch  # here, not at the top: reading a run's files (analyze, report, --config) needs no torch

    name = path.name
    if name == WEIGHTS_FILE:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise UserError(f"{name} is not a readable safetensors file ({type(e).__name__})", path, _RETRAIN) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # Never relay torch's hint to retry with weights_only=False: that would execute the file.
        raise UserError(f"{name} is not a plain tensor state dict; refused to load it (it may hold code)",
                        path, _RETRAIN) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{name} is not a state dict of tensors", path, _RETRAIN)
    return state


def read_weights(run: str | Path) -> dict:
    """The run's state dict of tensors: model.safetensors, else an older run's model.pt (weights_only)."""
    path = weights_file(run)
    if path is None:
        raise UserError(f"{WEIGHTS_FILE} is missing", Path(run) / WEIGHTS_FILE, _RETRAIN)
    return _read_state(path)


def load_weights(run: str | Path, module) -> None:
    """Load model.safetensors (or an older run's model.pt, weights_only) into `module`, every name and
    shape checked first."""
    import torch

    state = read_weights(run)
    path = weights_file(run)
    name = path.name
    want = module.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or unexpected:
        raise UserError(f"{name} does not match the model in config.json "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})", path, _RETRAIN)
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{name}: {k} has shape {tuple(state[k].shape)}, the model in config.json "
                            f"needs {tuple(v.shape)}", path, _RETRAIN)
        if state[k].dtype != v.dtype:  # load_state_dict would cast it silently
            raise UserError(f"{name}: {k} has dtype {state[k].dtype}, the model in config.json needs {v.dtype}",
                            path, _RETRAIN)
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise UserError(f"{name}: {k} holds NaN or infinite values", path, _RETRAIN)
    module.load_state_dict(state)
