"""A finished run, whichever mode trained it: `load_run` (its model and config.json) and
`load_predictor` (one predict interface: classes, text_pair, uses, probs(manifest, rows)).

This module sits above both training modes (fit/ for cached features, finetune/ for
encoders in the loop) so neither reaches into the other; it picks each mode's loader and
predictor by the run's mode (train.identity.run_mode, the one reader of config.json's "mode").

    cached run     the head (load_head) + its encoders rebuilt from the recorded provenance,
                   replayed as extraction made the features (CachedRunPredictor)
    fine-tune run  encoders + head in one FinetuneModule, raw inputs in (FinetuneRunPredictor)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from msa_cache.cache.schema import read_index
from msa_cache.device import resolve_device
from msa_cache.encoders import Encoder
from msa_cache.extract.dataset import RowDataset
from msa_cache.extract.runner import BatchRunner
from msa_cache.finetune.load import load_finetune_run
from msa_cache.finetune.record import rebuild_encoder
from msa_cache.finetune.train import predict_rows
from msa_cache.heads.base import Batch, ModalityInput
from msa_cache.manifest import Manifest
from msa_cache.train.identity import CACHED, FINETUNE, run_mode
from msa_cache.train.loop import class_probs
from msa_cache.train.rundir import is_finished, read_run
from msa_cache.fit.trainer import load_head


class RunPredictor(Protocol):
    """What `predict` needs from a loaded run, whatever its mode."""

    classes: list[str]

    @property
    def text_pair(self) -> bool: ...  # trained on sentence + target pairs

    @property
    def uses(self) -> set[str]: ...  # "text" / "image": the inputs a post must have

    def probs(self, manifest: Manifest, rows: np.ndarray) -> np.ndarray: ...


class CachedRunPredictor:
    """A cached-feature run: rebuilt encoders -> the fields the head was trained on -> the head."""

    def __init__(self, run: Path, head, config: dict, device: torch.device, batch_size: int):
        self.head, self.device, self.batch_size = head.to(device).eval(), device, batch_size
        self.classes = list(config["classes"])
        records = config.get("encoders", {})
        # One encoder per cache folder (a CLIP cache feeds clip_text and clip_image).
        self.groups: dict[str, dict] = {}
        recorded = config.get("fields") or {}  # runs before it was recorded: the text mask by its name
        for modality, cache in config["caches"].items():
            g = self.groups.setdefault(cache["path"], {"modalities": {}})
            g["record"] = records.get(modality) or _index_attrs(run, cache["path"])
            pooled, tokens = cache["fields"]
            mask = (recorded[modality]["mask"] if modality in recorded
                    else "text/mask" if tokens and tokens.startswith("text/") else None)
            g["modalities"][modality] = (pooled, tokens if head.uses_tokens else None,
                                         mask if head.uses_tokens else None)
        self.encoders: dict[str, Encoder] = {
            path: rebuild_encoder(g["record"], where=str(run)).to(device) for path, g in self.groups.items()}
        self.runners = {path: BatchRunner(enc, device, "auto", self.groups[path]["record"].get("dtype") or "float16",
                                          batch_size, log=lambda m: None)
                        for path, enc in self.encoders.items()}

    @property
    def uses(self) -> set[str]:
        return {m for enc in self.encoders.values() for m in ("text", "image") if getattr(enc, m) is not None}

    @property
    def text_pair(self) -> bool:
        """Trained on sentence + target pairs (its text cache records text_pair)."""
        return any((g["record"].get("preprocessing") or {}).get("text_pair") for g in self.groups.values())

    def probs(self, manifest: Manifest, rows: np.ndarray) -> np.ndarray:
        order = [int(r) for r in rows]
        loaders = [torch.utils.data.DataLoader(RowDataset(manifest, enc.text, enc.image, self.text_pair),
                                               batch_size=self.batch_size,
                                               sampler=order, collate_fn=enc.collator())
                   for enc in self.encoders.values()]

        def logits(parts) -> torch.Tensor:
            inputs = {}
            for (path, g), batch in zip(self.groups.items(), parts):
                _, arrays, _, _ = self.runners[path](batch)  # exactly what extraction stores
                for modality, (pooled, tokens, mask) in g["modalities"].items():
                    inputs[modality] = ModalityInput(
                        torch.from_numpy(arrays[pooled]).float(),
                        None if tokens is None else torch.from_numpy(arrays[tokens]).float(),
                        None if mask is None else torch.from_numpy(arrays[mask]).bool())
            n = len(parts[0]["rows"])
            with self.head.logits_only():
                return self.head(Batch(inputs, torch.full((n,), -1, dtype=torch.long)).to(self.device)).logits

        return class_probs(zip(*loaders), logits, len(self.classes))


class FinetuneRunPredictor:
    """A fine-tuned run: its whole model (encoders + head) on raw inputs, eval preprocessing."""

    def __init__(self, run: Path, model, config: dict, device: torch.device, batch_size: int):
        self.model, self.device, self.batch_size = model.to(device).eval(), device, batch_size
        self.classes = list(config["classes"])
        self.text_pair = bool(config.get("text_pair"))

    @property
    def uses(self) -> set[str]:
        specs = self.model.input_specs().values()
        return {"text" for t, _ in specs if t is not None} | {"image" for _, i in specs if i is not None}

    def probs(self, manifest: Manifest, rows: np.ndarray) -> np.ndarray:
        return predict_rows(self.model, manifest, np.asarray(rows), self.device, "fp32", self.batch_size)


def _index_attrs(run: Path, cache_path: str) -> dict:
    try:
        return read_index(Path(cache_path))["attrs"]
    except Exception as e:
        raise FileNotFoundError(f"{run}: its config.json records no encoders and the cache it was trained on "
                                f"({cache_path}) cannot be read ({e}); predict needs one of them") from None


@dataclass(frozen=True)
class RunMode:
    load: Callable[[Path, dict], torch.nn.Module]  # (run dir, config.json) -> the model, weights loaded
    predictor: Callable[..., RunPredictor]  # (run dir, model, config, device, batch_size)


def _load_finetune_model(path: Path, config: dict) -> torch.nn.Module:
    model, _ = load_finetune_run(path, config)
    return model


MODES = {CACHED: RunMode(load_head, CachedRunPredictor), FINETUNE: RunMode(_load_finetune_model, FinetuneRunPredictor)}


def _mode_of(config: dict) -> RunMode:
    return MODES[run_mode(config)]


def load_run(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a finished run's model (eval mode, CPU) and its config.json: a cached run's Head, or a
    fine-tune run's whole model (a `FinetuneModule`: encoders + head, raw inputs in), since its head only
    fits the fine-tuned encoders.

    The run directory is validated first (rundir.read_run), so a tampered or foreign folder is refused in
    one line before anything is built."""
    path = Path(path)
    config = read_run(path)
    return _mode_of(config).load(path, config).eval(), config


def load_predictor(run: str | Path, device: str = "auto", batch_size: int = 32) -> RunPredictor:
    """A finished run ready to predict new rows (its encoders rebuilt and verified)."""
    run = Path(run)
    if not is_finished(run):
        raise FileNotFoundError(f"{run}: not a finished run directory (no metrics.json); "
                                "pass runs/<manifest>/<run>/seed-K")
    model, config = load_run(run)
    return _mode_of(config).predictor(run, model, config, resolve_device(device), batch_size)


