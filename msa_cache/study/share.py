"""Sharing a finished run: its model card (write_card) and a self-contained folder for the Hugging Face
Hub (export_run, push_folder).

An exported folder is a run directory that `msa-cache predict` reads like the run itself:

    model.safetensors  the weights (an older run's model.pt converted)
    config.json        the head's config and what predict needs to rebuild the encoders: a cached run's
                       encoder records (name, model id, weights hash, max length, cleaning; filled in from
                       the cache for runs made before config.json held them) and the cache fields the head
                       read; a fine-tune run's encoder records (its fine-tuned encoder weights are in
                       model.safetensors)
    metrics.json       scores per split (also what marks the folder as a finished run)
    README.md          the model card (the run's own, or written now for runs made before cards)
    history.jsonl, confusion.png, command.yaml, tensorboard/   where the run has them

predictions.parquet stays behind: it holds every dataset row's id and label, which a model repo
should not publish.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Callable

from msa_cache.atomic import building_folder, write_text_atomic
from msa_cache.errors import UserError
from msa_cache.settings import shown
from msa_cache.train.card import check_license, model_card
from msa_cache.train.command import COMMAND_FILE
from msa_cache.train.identity import FINETUNE, run_mode
from msa_cache.train.rundir import (
    CARD_FILE, CONFIG_FILE, EVALS_DIR, FINISHED_MARKER, HISTORY_FILE, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE,
    read_evaluations, read_metrics, read_run, read_weights, save_weights, weights_file,
)

OPTIONAL_FILES = (HISTORY_FILE, "confusion.png", COMMAND_FILE)
OPTIONAL_DIRS = ("tensorboard", EVALS_DIR)


def write_card(run: str | Path) -> Path:
    """(Re)write README.md, the model card, of a finished run (e.g. one made before runs had cards)."""
    run = Path(run)
    config, metrics = read_run(run), read_metrics(run)
    _check_weights(run, config)  # a card only for a run that loads
    return write_text_atomic(run / CARD_FILE, model_card(config, metrics, _baseline_paper(config),
                                                         evaluations=read_evaluations(run)))


def _baseline_paper(config: dict) -> str:
    """A fine-tune baseline run's paper for its card (a registry head's the card finds itself)."""
    from msa_cache.finetune.baselines import BASELINES

    baseline = BASELINES.get(config["spec"].get("baseline") or "")
    return baseline.paper if baseline is not None else ""


def _with_encoder_records(run: Path, config: dict) -> dict:
    """config.json with the encoder records predict needs; a cached run made before config.json held them
    gets them from its caches' provenance (which the exported folder does not carry)."""
    if run_mode(config) == FINETUNE or config.get("encoders"):
        return config
    from msa_cache.cache.schema import read_index
    from msa_cache.fit.trainer import ENCODER_RECORD_KEYS

    records = {}
    for modality, cache in config["caches"].items():
        try:
            attrs = read_index(Path(cache["path"]))["attrs"]
        except Exception as e:
            raise UserError(f"config.json records no encoders and the cache it was trained on ({cache['path']}) "
                            f"cannot be read ({type(e).__name__})", run,
                            "run export where that cache is, or retrain the run") from None
        records[modality] = {k: attrs.get(k) for k in ENCODER_RECORD_KEYS}
    return {**config, "encoders": records}


def _check_weights(run: Path, config: dict) -> None:
    """Refuse weights that would not load: a cached run's head is built and loaded (every name and shape
    checked); a fine-tune run's file is parsed (its shapes need the encoders, which predict loads)."""
    if run_mode(config) == FINETUNE:
        read_weights(run)
    else:
        from msa_cache.fit.trainer import load_head

        load_head(run, config)


def _refuse_outside_files(run: Path) -> None:
    """Export copies regular files of the run only: a symlink (or a fifo, a device) among the files it
    copies could carry a file from elsewhere into the export and onto the Hub."""
    names = (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, FINISHED_MARKER, *OPTIONAL_FILES)
    paths = [run / name for name in names if os.path.lexists(run / name)]
    for name in OPTIONAL_DIRS:
        top = run / name
        paths.append(top)
        if top.is_dir() and not top.is_symlink():
            for folder, dirs, files in os.walk(top):
                paths += [Path(folder) / n for n in dirs + files]
    for path in paths:
        if not os.path.lexists(path):
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise UserError(f"{path.relative_to(run)} is {kind}; export copies the run's own files only", path,
                            "replace it by the file itself (or delete it) and export again")


def _write_export(run: Path, config: dict, metrics: dict, folder: Path, license: str | None = None) -> None:
    source = weights_file(run)
    if source is not None and source.name == WEIGHTS_FILE:
        shutil.copy2(source, folder / WEIGHTS_FILE)
    else:  # an older run's model.pt: read as plain tensors only, written as safetensors
        save_weights(read_weights(run), folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
    if (run / CARD_FILE).is_file():
        shutil.copy2(run / CARD_FILE, folder / CARD_FILE)
        if license is not None:
            _set_license(folder / CARD_FILE, license)
    else:
        (folder / CARD_FILE).write_text(model_card(config, metrics, _baseline_paper(config), license=license,
                                                  evaluations=read_evaluations(run)),
                                        encoding="utf-8")
    for name in OPTIONAL_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, folder / name)
    for name in OPTIONAL_DIRS:
        if (run / name).is_dir():
            shutil.copytree(run / name, folder / name)
    shutil.copy2(run / FINISHED_MARKER, folder / FINISHED_MARKER)  # last: the folder is a finished run


def _set_license(card_file: Path, license: str) -> None:
    """The run's own card (kept as it is, edits included) with `license` in its metadata and its line."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(card_file)
    card.data.license = license
    card.text = card.text.replace("License: none stated.", f"License: {license}.")
    card_file.write_text(str(card), encoding="utf-8")


def export_run(run: str | Path, out: str | Path, log: Callable[[str], None] = print,
               license: str | None = None) -> Path:
    """Write the finished run `run` to the new folder `out`, ready for huggingface_hub.upload_folder and
    readable by `msa-cache predict` like the run itself (see the module doc). Built in a temporary sibling
    and renamed, so `out` is either complete or absent; a non-empty `out` is refused. `license`: the Hub
    license id the card states (none stated by default)."""
    run, out = Path(run), Path(out)
    check_license(license)
    config = _with_encoder_records(run, read_run(run))
    metrics = read_metrics(run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError("the export folder exists and is not empty", out, "give a new (or empty) folder")
    if out.resolve().is_relative_to(run.resolve()):
        raise UserError("the export folder is inside the run", out, "give a folder outside the run directory")
    _refuse_outside_files(run)
    _check_weights(run, config)
    with building_folder(out) as tmp:
        _write_export(run, config, metrics, tmp, license)
        read_run(tmp)  # the folder must read back as a run (predict's own check)
    log(f"exported {run} to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return out


def check_repo_id(repo_id: str) -> None:
    """A Hub repo id (`user/name` or `name`) the Hub accepts; UserError otherwise (before any work)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"--push {shown(repo_id)} is not a valid Hub repo id ({str(e).splitlines()[0]})",
                        hint="use USER/NAME or ORG/NAME") from None


def push_folder(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Create the model repo `repo_id` if needed and upload `folder` to it; the commit's URL."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=f"msa-cache export of {Path(folder).name}")
    except Exception as e:  # network, auth, offline mode: the export itself is complete
        raise UserError(f"pushing to the Hub failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})",
                        repo_id, f"check `hf auth login` (or HF_TOKEN) and the network; {folder} is complete, "
                                 "push it later with huggingface_hub.upload_folder") from None
    return str(getattr(info, "commit_url", info))
