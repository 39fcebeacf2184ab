"""Predict new posts with a finished run: its recorded encoders and preprocessing, then its head.

    from msa_cache.predict import load_predictor, predict_post, predict_manifest
    predict_post("runs/mvsa-single/ae-cat-.../seed-0", "what a day!", "post.jpg")
    # {'class': 'positive', 'probs': {'positive': 0.81, 'neutral': 0.12, 'negative': 0.07}}
    predict_manifest(run, "manifests/new-posts.parquet", "preds.parquet")

A cached run is replayed as extraction made its features: each encoder is
rebuilt from the record in config.json (or, for older runs, the cache's
index.json), with the recorded max_length and text cleaning, verified against
the recorded weights hash, and run through extraction's own batch runner (bad
images -> zero features, values rounded to the cache dtype). A fine-tuned run
rebuilds its whole model (`load_run`). Either way an encoder that cannot be
loaded, or loads other weights, is refused with one line saying which.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from msa_cache.cache.schema import read_index
from msa_cache.device import resolve_device
from msa_cache.encoders import Encoder
from msa_cache.extract.dataset import RowDataset
from msa_cache.extract.runner import BatchRunner
from msa_cache.finetune.record import rebuild_encoder
from msa_cache.finetune.train import predict_rows
from msa_cache.heads.base import Batch, ModalityInput
from msa_cache.manifest import Manifest, ManifestMeta, read_manifest, rows_to_table
from msa_cache.manifest.images import load_rgb
from msa_cache.runs.rundir import is_finished
from msa_cache.runs.trainer import load_run


class CachedRunPredictor:
    """A cached-feature run: rebuilt encoders -> the fields the head was trained on -> the head."""

    def __init__(self, run: Path, head, config: dict, device: torch.device, batch_size: int):
        self.head, self.device, self.batch_size = head.to(device).eval(), device, batch_size
        self.classes = list(config["classes"])
        records = config.get("encoders", {})
        # One encoder per cache folder (a CLIP cache feeds clip_text and clip_image).
        self.groups: dict[str, dict] = {}
        for modality, cache in config["caches"].items():
            g = self.groups.setdefault(cache["path"], {"modalities": {}})
            g["record"] = records.get(modality) or _index_attrs(run, cache["path"])
            pooled, tokens = cache["fields"]
            mask = "text/mask" if tokens and tokens.startswith("text/") else None
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

    @torch.no_grad()
    def probs(self, manifest: Manifest, rows: np.ndarray) -> np.ndarray:
        order = [int(r) for r in rows]
        loaders = [torch.utils.data.DataLoader(RowDataset(manifest, enc.text, enc.image, self.text_pair),
                                               batch_size=self.batch_size,
                                               sampler=order, collate_fn=enc.collator())
                   for enc in self.encoders.values()]
        out = []
        for parts in zip(*loaders):
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
                logits = self.head(Batch(inputs, torch.full((n,), -1, dtype=torch.long)).to(self.device)).logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)


class FinetuneRunPredictor:
    """A fine-tuned run: its whole model (encoders + head) on raw inputs, eval preprocessing."""

    def __init__(self, model, config: dict, device: torch.device, batch_size: int):
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


def load_predictor(run: str | Path, device: str = "auto", batch_size: int = 32):
    run = Path(run)
    if not is_finished(run):
        raise FileNotFoundError(f"{run}: not a finished run directory (no metrics.json); "
                                "pass runs/<manifest>/<run>/seed-K")
    model, config = load_run(run)
    dev = resolve_device(device)
    if config.get("mode") == "finetune":
        return FinetuneRunPredictor(model, config, dev, batch_size)
    return CachedRunPredictor(run, model, config, dev, batch_size)


def posts_manifest(posts: list[dict], classes: list[str]) -> Manifest:
    """New posts ({"text", "image"}) as an in-memory manifest, so they go through the same readers."""
    rows = [{"id": str(i), "text": p.get("text") or "", "text_pair": p.get("text_pair"), "split": "test",
             "image": str(Path(p["image"]).resolve()) if p.get("image") else "",
             "image_ok": bool(p.get("image")), "problem": "" if p.get("image") else "no image"}
            for i, p in enumerate(posts)]
    meta = ManifestMeta(dataset="posts", classes=list(classes), root="", builder="predict")
    return Manifest(rows_to_table(rows), meta, path=None)


def _check_post(predictor, text: str | None, image: str | None) -> None:
    uses = predictor.uses
    if "image" in uses:
        if image is None:
            raise ValueError("this run uses an image encoder; pass --image FILE")
        try:
            load_rgb(image)
        except Exception as e:
            raise ValueError(f"--image {image}: cannot read it as an image ({type(e).__name__}: {e})") from None
    if "text" in uses and text is None:
        raise ValueError("this run uses a text encoder; pass --text \"...\" (an empty string is allowed)")


def _check_pair(predictor, text_pair: str | None) -> None:
    if predictor.text_pair and text_pair is None:
        raise ValueError("this run was trained on sentence + target pairs (e.g. Twitter-15/17); "
                         "pass --text-pair TARGET (and the sentence with the target in it as --text)")
    if not predictor.text_pair and text_pair is not None:
        raise ValueError("this run was trained on single texts; leave out --text-pair")


def _pairs_as_trained(man: Manifest, predictor, where: str) -> Manifest:
    """The manifest with text pairs exactly where the run was trained with them."""
    if predictor.text_pair and not man.has_text_pair:
        raise ValueError(f"{where}: this run was trained on sentence + target pairs, and the manifest has "
                         "no text_pair column; build it with `msa-cache manifest tmsc` (or table --text-pair-col)")
    if not predictor.text_pair and man.has_text_pair:  # the run never saw a second segment
        column = man.table.schema.get_field_index("text_pair")
        table = man.table.set_column(column, "text_pair", pa.nulls(len(man), pa.string()))
        return Manifest(table, man.meta, man.path)
    return man


def predict_post(run, text: str | None = None, image: str | None = None, predictor=None,
                 text_pair: str | None = None) -> dict:
    """{"class": name, "probs": {class: p}} for one post (text_pair: its target, for runs trained on pairs)."""
    predictor = predictor or load_predictor(run)
    _check_post(predictor, text, image)
    _check_pair(predictor, text_pair)
    post = {"text": text, "image": image, "text_pair": text_pair}
    probs = predictor.probs(posts_manifest([post], predictor.classes), np.arange(1))[0]
    return {"class": predictor.classes[int(probs.argmax())],
            "probs": {c: round(float(p), 6) for c, p in zip(predictor.classes, probs)}}


def predict_manifest(run, manifest: str | Path, out: str | Path | None = None, split: str | None = None,
                     predictor=None) -> pa.Table:
    """id, split, label, pred, pred_class, prob_<class> for the manifest's rows (one split, or all),
    the columns of a run's predictions.parquet plus the class name; written to `out` when given."""
    predictor = predictor or load_predictor(run)
    man = _pairs_as_trained(read_manifest(manifest), predictor, str(manifest))
    labels = man.labels("label")
    if man.classes != predictor.classes and (labels >= 0).any():
        raise ValueError(f"{manifest}: its classes {man.classes} are not the run's {predictor.classes}; "
                         "labels would be compared with the wrong classes")
    splits = np.array(man.column("split"))
    rows = np.arange(len(man)) if split is None else np.flatnonzero(splits == split)
    probs = predictor.probs(man, rows)
    preds = probs.argmax(1) if len(rows) else np.zeros(0, dtype=np.int64)
    ids = man.ids
    cols = {
        "id": pa.array([ids[r] for r in rows], pa.string()),
        "split": pa.array(splits[rows].tolist(), pa.string()),
        "label": pa.array([None if labels[r] < 0 else int(labels[r]) for r in rows], pa.int64()),
        "pred": pa.array(preds.astype(np.int64)),
        "pred_class": pa.array([predictor.classes[p] for p in preds], pa.string()),
    }
    for c, name in enumerate(predictor.classes):
        cols[f"prob_{name}"] = pa.array(probs[:, c].astype(np.float32))
    table = pa.table(cols)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
    return table


def run_summary(run: str | Path) -> str:
    config = json.loads((Path(run) / "config.json").read_text())
    spec = config.get("spec", {})
    mode = config.get("mode", "cache")
    encoders = ", ".join(sorted({r.get("encoder", "?") for r in (config.get("encoders") or {}).values()}))
    return f"{spec.get('head')} ({mode}{'; ' + encoders if encoders else ''})"
