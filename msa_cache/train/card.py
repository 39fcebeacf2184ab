"""A run's model card: README.md in the Hugging Face model-card format, built from config.json and
metrics.json alone (so it can be written for any finished run, old ones too, and for cached and
fine-tuned runs alike).

The YAML metadata comes from huggingface_hub's ModelCardData / EvalResult (library_name, tags,
datasets, pipeline_tag, base_model, license where one is given, a model-index with every labeled
split's accuracy, macro-F1 and weighted-F1); the body lists the encoders (ids and weight hashes), the
head and its paper, the scores, the seed, the optimiser and the full config, the command that
reproduces the run, and how to use it from the command line and from Python.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from msa_cache.encoders.catalog import ENCODERS
from msa_cache.errors import UserError
from msa_cache.heads import HEADS
from msa_cache.metrics import METRICS
from msa_cache.train.identity import FINETUNE, run_mode
from msa_cache.train.command import command_line, command_name

LIBRARY = "msa-cache"
TASK_TYPE = "multimodal-sentiment-analysis"
TASK_NAME = "Multimodal (image + text) sentiment analysis"
# The Hub has no task for classifying an image + text pair: its multimodal tasks (image-text-to-text,
# visual-question-answering, ...) generate text or answer questions. Sentiment analysis is a sub-task of
# text-classification there, and the output here is the same (one class label with its probabilities).
PIPELINE_TAG = "text-classification"
PIPELINE_WHY = ("The Hub's `pipeline_tag` is `text-classification`, the nearest Hub task: the Hub has no "
                "task for classifying an image + text pair (its multimodal tasks generate text or answer "
                "questions), and sentiment analysis is filed under text classification there. The model "
                "reads the image too, so load it with msa-cache (below), not with a transformers pipeline.")
# A Hub license id: lowercase letters, digits, dots and dashes (mit, apache-2.0, cc-by-4.0, other).
_LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.\-]*")


def _dataset(config: dict) -> str:
    return Path(str(config["spec"].get("manifest", "dataset"))).stem


def _split_meaning(config: dict) -> dict[str, str]:
    """What each split's scores are: dev selected the model (early stopping), so it is optimistic."""
    spec = config["spec"]
    if spec.get("cv_folds") and spec.get("refit") is None:
        dev = f"held-out rows of cross-validation fold {spec.get('cv_fold')} of {spec['cv_folds']} (early stopping)"
    else:
        dev = "the dev split; it chose the epoch (early stopping), so its scores are optimistic"
    return {"train": "the rows the head was trained on", "dev": dev,
            "test": "the held-out test split, never used for training or selection"}


def _eval_results(config: dict, metrics: dict) -> list:
    from huggingface_hub import EvalResult

    name = _dataset(config)
    return [EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=name, dataset_name=name,
                       dataset_split=split, metric_type=m.hf_type, metric_value=round(float(metrics[split][m.key]), 6),
                       metric_name=f"{split} {m.title}",
                       metric_args={"average": m.hf_average} if m.hf_average else None)
            for split in ("dev", "test") if split in metrics
            for m in METRICS if metrics[split].get(m.key) is not None]


def _encoder_rows(config: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(role, encoder, model id, revision, weights sha256, preprocessing) per recorded encoder: the run's
    encoder records where it has them, else (older cached runs) its caches' provenance."""
    rows = []
    records = config.get("encoders") or {}
    caches = config.get("caches") or {}
    for role in sorted(set(records) | set(caches)):
        rec, cache = records.get(role) or {}, caches.get(role) or {}
        pre = rec.get("preprocessing") or (cache.get("settings") or {}).get("preprocessing") or {}
        shown = {k: pre[k] for k in ("max_length", "clean", "text_pair", "image_size", "resize") if k in pre}
        rows.append((role, str(rec.get("encoder") or cache.get("encoder") or "?"),
                     str(rec.get("model_id") or cache.get("model") or ""), str(rec.get("revision") or ""),
                     str(rec.get("weights_sha256") or cache.get("weights") or ""),
                     ", ".join(f"{k}={v}" for k, v in shown.items())))
    return rows


def check_license(license: str | None) -> str | None:
    """A license id for the card's metadata, as the Hub writes them; UserError for anything else."""
    if license is None:
        return None
    if not _LICENSE_ID.fullmatch(license):
        raise UserError(f"--license {license!r} is not a Hub license id",
                        hint="use the Hub's id, lowercase, e.g. mit, apache-2.0, cc-by-4.0 or other")
    return license


def base_models(config: dict) -> list[str]:
    """The encoders' Hugging Face Hub ids, for the card's base_model: only encoders loaded from the Hub
    (`hf:ORG/NAME`, and catalog entries without a `blank` architecture: torchvision and pip-packaged
    weights are not Hub models), never a local folder or an in-memory model (their model id is a path
    or "in-memory")."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    ids = []
    for _, encoder, model_id, *_ in _encoder_rows(config):
        entry = ENCODERS.get(encoder)
        from_hub = encoder.startswith("hf:") or (entry is not None and entry.blank is None)
        if not from_hub or model_id in ("", "in-memory") or model_id in ids:
            continue
        if model_id.startswith((".", "/", "~")) or Path(model_id).is_dir():  # a local folder
            continue
        try:
            validate_repo_id(model_id)
        except HFValidationError:
            continue
        ids.append(model_id)
    return ids


def head_record(head, fields: dict) -> dict:
    """config.json's "head_record" entry: what the head reports it did (Head.run_record; `fields` = the
    run's fields record); nothing when it reports nothing, so other heads' config.json stay as they were."""
    record = head.run_record(fields)
    return {"head_record": record} if record else {}


def _head_paper(head: str) -> str:
    cls = HEADS.get(head)
    return getattr(cls, "paper", "") if cls is not None else ""


def _reproduce(config: dict) -> str:
    """The full command line, and the short form that reads the same options from the run's own files."""
    try:
        full = command_line(config)
    except (KeyError, TypeError, ValueError):  # a config too old or too odd to map: the short form only
        full = None
    short = f"msa-cache {command_name(config)} --config RUN/config.json   # or RUN/command.yaml"
    return short if full is None else f"{full}\n# the same options, read from this run folder's own files (paths stay relative to where the run was made):\n{short}"


def _table(header: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _optimizer_line(settings: dict | None) -> str:
    """The optimiser as the run used it (config.json `optimizer`); runs made before it was recorded say so."""
    if not settings:
        return "not recorded (a run made before config.json held it; see the spec's train options)"
    rest = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "optimizer")
    return f"{settings['optimizer']}" + (f" ({rest})" if rest else "")


CORRUPTION_WORDS = {"drop": "{side} missing (the head's stand-in)", "shuffle": "{side} of another row (shuffled)",
                    "noise": "{side} + Gaussian noise, {scale:g}x its std"}


def _evaluation_what(ev: dict) -> str:
    c = ev.get("corruption") or {}
    words = CORRUPTION_WORDS.get(c.get("type"), "{side} {type}").format(
        side=c.get("side"), type=c.get("type"), scale=c.get("scale") or 0) if c else ""
    if ev["kind"] == "transfer":
        return f"on {ev['manifest']['name']}" + (f", {words}" if words else "")
    return words or "as trained"


def _evaluations(evaluations: list[dict], monitor: str | None) -> list[str]:
    """The card's "Evaluations" section: what `msa-cache evaluate` measured on this run, one row per split."""
    if not evaluations:
        return []
    metric = next((m for m in METRICS if m.name == monitor), None)
    rows = []
    for ev in evaluations:
        for split, m in ev["splits"].items():
            lo_hi = (m.get("interval") or {}).get(metric.key) if metric else None
            ci = f"{lo_hi[0]:.4f}-{lo_hi[1]:.4f}" if isinstance(lo_hi, list) and len(lo_hi) == 2 else ""
            rows.append((f"`{ev['name']}`", _evaluation_what(ev), split, m.get("n", ""),
                         *(f"{m[k.key]:.4f}" if isinstance(m.get(k.key), (int, float)) else "" for k in METRICS), ci))
    ci_title = f"{metric.title} 95% CI" if metric else "95% CI"
    return ["## Evaluations", "",
            "Scores of this model with a modality missing, shuffled or noisy, or on another dataset "
            "(`msa-cache evaluate`; docs/methods.md says what each corruption does):", "",
            _table(("evaluation", "what", "split", "rows", *(m.title for m in METRICS), ci_title), rows),
            ""]


def model_card(config: dict, metrics: dict, baseline_paper: str = "", license: str | None = None,
               evaluations: list[dict] | None = None) -> str:
    """README.md of a run: Hugging Face model-card metadata (library, tags, datasets, pipeline_tag,
    base_model, license where given, model-index with the dev/test scores) and a body with the encoders,
    the head and its paper, the scores, the seed, the optimiser, the full config, the command that
    reproduces the run and its use from the CLI and Python. A fine-tune baseline is a whole model, not a
    registry head: its caller gives its paper (finetune/baseline.py, Baseline.paper). `evaluations`: the
    run's evals/*.json (rundir.read_evaluations), listed in their own section."""
    from huggingface_hub import ModelCard, ModelCardData

    spec = config["spec"]
    mode, dataset = run_mode(config), _dataset(config)
    baseline = spec.get("baseline")
    head = baseline or spec["head"]
    title = f"{head} on {dataset} (seed {spec.get('seed', 0)})"
    bases = base_models(config)
    data = ModelCardData(
        library_name=LIBRARY, datasets=[dataset], model_name=title, pipeline_tag=PIPELINE_TAG,
        base_model=bases or None, license=check_license(license),
        tags=["multimodal", "sentiment-analysis", head, "fine-tuned" if mode == FINETUNE else "cached-features"],
        metrics=sorted({m.hf_type for m in METRICS}), eval_results=_eval_results(config, metrics) or None)

    if mode == FINETUNE:
        what = (f"The `{head}` model fine-tuned end to end with its encoders (`msa-cache finetune`): "
                "model.safetensors holds the encoders' fine-tuned weights and the head; the weight hashes below "
                "are those of the encoders it started from, which `predict` loads first for their architecture "
                "and preprocessing.")
    else:
        what = (f"The `{head}` fusion head trained on features that frozen encoders stored once in a cache "
                "(`msa-cache fit`): model.safetensors holds the head only; `predict` rebuilds the encoders below "
                "(checking their weight hashes) and replays the extraction.")
    paper = baseline_paper if baseline else _head_paper(spec["head"])
    options = spec.get("head_options") or {}
    meaning = _split_meaning(config)
    score_rows = [(split, *(f"{metrics[split][m.key]:.4f}" for m in METRICS), metrics[split].get("n", ""),
                   meaning[split]) for split in ("train", "dev", "test") if split in metrics]
    train = spec.get("train") or {}
    body = [
        f"# {title}", "",
        f"Image + text sentiment classifier over {len(config.get('classes', []))} classes "
        f"({', '.join(config.get('classes', []))}), trained with msa-cache "
        f"on the `{dataset}` manifest (fingerprint `{config.get('manifest_fingerprint', '')}`).", "",
        what, "",
        "## Encoders", "",
        _table(("role", "encoder", "model id", "revision", "weights sha256", "preprocessing"), _encoder_rows(config)),
        "",
        "Hub base models (`base_model`): " + (", ".join(f"`{b}`" for b in bases) if bases else
                                              "none (no encoder of this run was loaded from the Hugging Face Hub)")
        + ".", "",
        PIPELINE_WHY, "",
        "## Head", "",
        f"- head: `{head}`" + (" (a fine-tune baseline)" if baseline else ""),
        f"- paper: {paper or 'not recorded'}",
        f"- options: `{json.dumps(options, sort_keys=True)}`",
        f"- parameters: {config.get('num_parameters', '?')}",
        *(f"- {key.replace('_', ' ')}: {value}" for key, value in sorted((config.get("head_record") or {}).items())),
        "",
        "## Scores", "",
        _table(("split", *(m.title for m in METRICS), "rows", "what it is"), score_rows), "",
        f"Monitor (early stopping and model selection): `{train.get('monitor')}`.", "",
        *_evaluations(evaluations or [], train.get("monitor")),
        "## Training", "",
        f"- seed: {spec.get('seed', 0)}",
        f"- optimiser: {_optimizer_line(config.get('optimizer'))}",
        *([f"- modality dropout: {train['modality_dropout']} (a train row lost its text or its image with this "
            "probability; docs/methods.md, Missing modality)"] if train.get("modality_dropout") else []),
        f"- device: {config.get('device', '?')}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in sorted((config.get('versions') or {}).items()))}", "",
        "Full config (config.json `spec`):", "",
        "```json", json.dumps(spec, indent=2, sort_keys=True, default=str), "```", "",
        "## Reproduce", "",
        "```bash", _reproduce(config), "```", "",
        "## Use", "",
        "```bash",
        "msa-cache predict . --text \"what a day\" --image post.jpg",
        "msa-cache predict . --manifest manifests/new.parquet -o preds.parquet",
        "```", "",
        "From Python (`pip install msa-cache`; the folder, or its Hub repo id once pushed):", "",
        "```python",
        "import msa_cache",
        "",
        "model = msa_cache.load(\"USER/REPO\")  # or the folder's path",
        "model.predict([\"what a day\"], [\"post.jpg\"])  # texts, images (paths or PIL images): class names",
        "model.predict_proba([\"what a day\"], [\"post.jpg\"])  # probabilities, columns in model.classes",
        "```", "",
        f"License: {license if license else 'none stated'}.", "",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)))
