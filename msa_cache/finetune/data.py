"""Manifest rows -> encoder inputs (token ids, pixels), with train-time augmentation.

Each encoder role ("text", "image", "clip", "visualbert") brings its own
`TextSpec` (tokenizer, max_length, cleaning) and/or `ImageSpec` (resize, crop,
normalisation), exactly those a cache of that encoder records; the batch keys
are "<role>/input_ids", "<role>/attention_mask", "<role>/pixel_values" (and
"<role>/token_type_ids" where the manifest has sentence + target pairs).

Augmentation, on train rows only:
- images (`augment=True`, MDSE's recipe): the eval resize, then a random crop
  of the eval size from the image padded by size/16 (in place of the centre
  crop), a horizontal flip with p=0.5, and random erasing (p=0.5, 2-15 % of the
  area) after normalisation;
- text "translation": the back-translated view from `translation.json` (a list
  of {"id", "text_translation"} in the dataset root or root/splits; the shared
  MVSA copy has splits/translation.json) replaces the text with p=0.5;
- text "synonyms": each word found in SYNONYMS (a small built-in table of common
  sentiment words and intensifiers, no downloads) is replaced with p=0.3 by one
  of its synonyms, keeping sentiment and capitalisation.

Bad images (flagged in the manifest or undecodable) give zero pixels and ok=False;
the model zeroes their image features, as extraction stores them.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from msa_cache.encoders.base import ImageSpec, TextSpec, encode_texts
from msa_cache.manifest import Manifest
from msa_cache.manifest.images import load_rgb

Specs = dict[str, tuple[TextSpec | None, ImageSpec | None]]  # role -> (text spec, image spec)

TRANSLATION_P = 0.5
SYNONYM_P = 0.3
SYNONYMS: dict[str, tuple[str, ...]] = {
    "happy": ("glad", "joyful", "cheerful"), "glad": ("happy", "pleased"), "joy": ("delight", "happiness"),
    "good": ("nice", "fine", "great"), "great": ("excellent", "wonderful", "awesome"),
    "awesome": ("amazing", "great", "fantastic"), "amazing": ("awesome", "incredible", "wonderful"),
    "beautiful": ("lovely", "gorgeous", "pretty"), "lovely": ("beautiful", "charming"),
    "love": ("adore", "like"), "like": ("enjoy", "love"), "best": ("greatest", "finest"),
    "fun": ("enjoyable", "entertaining"), "excited": ("thrilled", "eager"), "cute": ("adorable", "sweet"),
    "thanks": ("thank you", "cheers"), "congrats": ("congratulations",), "win": ("victory", "triumph"),
    "sad": ("unhappy", "down", "gloomy"), "bad": ("awful", "poor", "terrible"),
    "terrible": ("awful", "horrible", "dreadful"), "awful": ("terrible", "horrible"),
    "hate": ("detest", "loathe"), "angry": ("mad", "furious"), "worst": ("poorest", "most awful"),
    "sorry": ("sad", "regretful"), "scared": ("afraid", "frightened"), "tired": ("exhausted", "weary"),
    "ugly": ("hideous", "unattractive"), "cry": ("weep", "sob"), "death": ("loss", "passing"),
    "very": ("really", "so", "extremely"), "really": ("very", "truly"), "so": ("very", "really"),
    "big": ("large", "huge"), "small": ("little", "tiny"), "today": ("this day",), "friends": ("pals", "mates"),
    "pic": ("photo", "picture"), "photo": ("picture", "pic"), "picture": ("photo", "image"),
}
_WORD = re.compile(r"[A-Za-z]+")


# -- images -------------------------------------------------------------------------------
def train_transform(spec: ImageSpec) -> Callable[[Image.Image], torch.Tensor]:
    from torchvision import transforms as T

    mode = getattr(T.InterpolationMode, spec.interpolation.upper())
    resize = T.Resize((spec.size, spec.size), interpolation=mode) if spec.resize is None else T.Resize(
        spec.resize, interpolation=mode)
    return T.Compose([
        resize,
        T.RandomCrop(spec.size, padding=max(1, spec.size // 16), pad_if_needed=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(list(spec.mean), list(spec.std)),
        T.RandomErasing(p=0.5, scale=(0.02, 0.15), value=0),
    ])


# -- text augmentation ----------------------------------------------------------------------
def _rand() -> float:
    # torch's RNG: seeded by the run seed, and per DataLoader worker.
    return float(torch.rand(()))


class TranslationAug:
    """Use the back-translated text of a row with probability p (rows without one keep theirs)."""

    def __init__(self, translations: dict[str, str], p: float = TRANSLATION_P):
        self.translations, self.p = translations, p

    def __call__(self, row_id: str, text: str) -> str:
        other = self.translations.get(row_id)
        return other if other and _rand() < self.p else text


class SynonymAug:
    """Replace each word found in `table` with probability p by one of its synonyms."""

    def __init__(self, table: dict[str, tuple[str, ...]] = SYNONYMS, p: float = SYNONYM_P):
        self.table, self.p = table, p

    def _swap(self, match: re.Match) -> str:
        word = match.group(0)
        options = self.table.get(word.lower())
        if not options or _rand() >= self.p:
            return word
        new = options[int(torch.randint(len(options), ()))]
        return new.capitalize() if word[0].isupper() else new

    def __call__(self, row_id: str, text: str) -> str:
        return _WORD.sub(self._swap, text)


def load_translations(root: str | Path) -> dict[str, str]:
    root = Path(root)
    for path in (root / "translation.json", root / "splits" / "translation.json"):
        if path.is_file():
            try:
                items = json.loads(path.read_text(encoding="utf-8"))
                return {str(it["id"]): str(it["text_translation"]) for it in items}
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: expected a JSON list of {{\"id\", \"text_translation\"}} ({e})") from None
    raise FileNotFoundError(f"--text-aug translation: no translation.json in {root} or {root / 'splits'}; "
                            "use --text-aug synonyms or none")


def make_text_aug(kind: str, manifest: Manifest) -> Callable[[str, str], str] | None:
    if kind == "none":
        return None
    if kind == "translation":
        return TranslationAug(load_translations(manifest.root))
    if kind == "synonyms":
        return SynonymAug()
    raise ValueError(f"--text-aug must be none, translation or synonyms, not '{kind}'")


# -- dataset and collation --------------------------------------------------------------------
class PostDataset(Dataset):
    """Rows of a manifest as {row, ok, label, texts: {role: str}, pixels: {role: tensor}}."""

    def __init__(self, manifest: Manifest, rows: np.ndarray, specs: Specs, train: bool = False,
                 augment: bool = False, text_aug: Callable[[str, str], str] | None = None):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.specs, self.train = specs, train
        self.ids, self.texts = manifest.ids, manifest.column("text")
        self.pairs = manifest.text_pairs()  # sentence + target pairs (Twitter-15/17), else None
        self.labels = manifest.labels("label")
        self.modality_labels = {m: manifest.labels(f"{m}_label") for m in ("text", "image")}
        self.needs_image = any(image is not None for _, image in specs.values())
        if self.needs_image:
            self.paths = [str(manifest.image_path(p)) for p in manifest.column("image")]
            self.image_ok, self.problems = manifest.column("image_ok"), manifest.column("problem")
        make = train_transform if train and augment else ImageSpec.transform
        self.transforms = {role: make(image) for role, (_, image) in specs.items() if image is not None}
        self.text_aug = text_aug if train else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        item = {"row": row, "ok": True, "label": int(self.labels[row]),
                "modality_labels": {m: int(v[row]) for m, v in self.modality_labels.items()},
                "texts": {}, "pairs": {}, "pixels": {}}
        text = self.texts[row]
        if self.text_aug is not None:
            text = self.text_aug(self.ids[row], text)
        image = self._image(row) if self.needs_image else None
        item["ok"] = image is not None or not self.needs_image
        for role, (tspec, ispec) in self.specs.items():
            if tspec is not None:
                item["texts"][role] = tspec.prepare(text)
                if self.pairs is not None:
                    pair = self.pairs[row]  # None: this row has no second segment
                    item["pairs"][role] = None if pair is None else tspec.prepare(pair)
            if ispec is not None:
                item["pixels"][role] = (self.transforms[role](image) if image is not None
                                        else torch.zeros(3, ispec.size, ispec.size))
        return item

    def _image(self, row: int) -> Image.Image | None:
        if not self.image_ok[row]:
            return None
        try:
            return load_rgb(self.paths[row])
        except Exception:  # any decode failure is a bad row, as in extraction
            return None


class PostCollator:
    """Tokenises each role's texts (to max_length, or to the longest row when `pad_to_max` is off) and
    stacks pixels."""

    def __init__(self, specs: Specs, pad_to_max: bool):
        self.specs, self.pad_to_max = specs, pad_to_max

    def __call__(self, items: list[dict]) -> dict:
        batch = {
            "rows": torch.tensor([it["row"] for it in items], dtype=torch.long),
            "ok": torch.tensor([it["ok"] for it in items], dtype=torch.bool),
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "modality_labels": {m: torch.tensor([it["modality_labels"][m] for it in items], dtype=torch.long)
                                for m in items[0]["modality_labels"]},
        }
        for role, (tspec, ispec) in self.specs.items():
            if tspec is not None:
                pairs = [it["pairs"][role] for it in items] if role in items[0]["pairs"] else None
                enc = encode_texts(tspec.tokenizer, [it["texts"][role] for it in items], pairs, truncation=True,
                                   padding="max_length" if self.pad_to_max else "longest",
                                   max_length=tspec.max_length, return_tensors="pt")
                batch[f"{role}/input_ids"], batch[f"{role}/attention_mask"] = enc["input_ids"], enc["attention_mask"]
                if pairs is not None and "token_type_ids" in enc:  # as extraction feeds them (TextSpec.tokenize)
                    batch[f"{role}/token_type_ids"] = enc["token_type_ids"]
            if ispec is not None:
                batch[f"{role}/pixel_values"] = torch.stack([it["pixels"][role] for it in items])
        return batch


def batch_to(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = {m: t.to(device, non_blocking=True) for m, t in v.items()}
        else:
            out[k] = v.to(device, non_blocking=True)
    return out


def make_loader(dataset: PostDataset, collator: PostCollator, batch_size: int, shuffle: bool, workers: int,
                seed: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers already run in parallel
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                                       collate_fn=collator, generator=generator, pin_memory=pin_memory)
