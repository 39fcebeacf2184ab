"""The demo's embedded default dataset, for machines without MVSA.

SYNTHETIC, and named so everywhere it appears: tweet-like texts from templates
and drawn images (warm/smiling, cold/frowning, grey/plain scenes), written in
the CLMLF layout that `msa-cache manifest clmlf` reads (like the shared
MVSA-Single copy). It exists so the demo runs end to end with the real
pretrained offline encoders on a fresh machine; its scores say the pipeline
works, nothing about any paper.

It is built so that fusion matters, as in real posts: in about a third of the
posts only the text carries the sentiment (the picture is a plain scene), in
another third only the image does (the text is neutral chatter), and in the
rest both do. A uni-modal head therefore misses most posts whose sentiment
sits in the other modality; a head that fuses both can do much better. One
label in ten is then replaced by a random class (annotation noise), so no head
should reach 100%.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("positive", "neutral", "negative")  # CLMLF order: 0, 1, 2
LABEL_NOISE = 0.1

_SUBJECTS = ["the new cafe", "my team", "this city", "the concert", "our trip", "the game", "my dog",
             "the weekend", "this book", "the new phone", "work today", "the beach"]
_TEXT = {
    0: ["loving {s} so much!", "what a wonderful time at {s}", "so happy about {s} :)", "{s} made my day, amazing",
        "best day ever with {s}", "grateful for {s}, beautiful"],
    1: ["photo of {s}", "heading to {s} at 3pm", "{s} is open until 9", "a picture from {s}",
        "{s} this afternoon", "posting {s} for later"],
    2: ["{s} was awful, never again", "so sad about {s}", "hate how {s} turned out", "{s} ruined everything",
        "worst experience at {s}", "disappointed and angry about {s}"],
}
_EXTRAS = ["", " #Weekend", " #LifeIsGood", " @friend", " http://t.co/x1y2", " #MondayMood"]
_COLOURS = {0: [(250, 200, 60), (255, 150, 80), (250, 230, 120)],
            1: [(150, 150, 150), (170, 165, 160), (130, 135, 140)],
            2: [(30, 40, 90), (60, 60, 70), (20, 25, 45)]}


def _draw(label: int, rng: random.Random, size: int = 224) -> Image.Image:
    """Warm + smile (positive), grey + plain shapes (neutral), dark + frown (negative)."""
    base = rng.choice(_COLOURS[label])
    bg = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 6)):  # clutter common to every class
        x, y = rng.randint(0, size - 40), rng.randint(0, size - 40)
        w, h = rng.randint(15, 60), rng.randint(15, 60)
        d.rectangle([x, y, x + w, y + h], outline=tuple(rng.randint(0, 255) for _ in range(3)), width=2)
    if label != 1:
        cx, cy, r = rng.randint(70, size - 70), rng.randint(70, size - 70), rng.randint(35, 55)
        face = (255, 230, 90) if label == 0 else (120, 130, 160)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=face, outline=(0, 0, 0), width=3)
        for ex in (-r // 3, r // 3):
            d.ellipse([cx + ex - 5, cy - r // 3 - 5, cx + ex + 5, cy - r // 3 + 5], fill=(0, 0, 0))
        box = [cx - r // 2, cy - r // 6, cx + r // 2, cy + r // 2] if label == 0 else \
              [cx - r // 2, cy + r // 6, cx + r // 2, cy + 2 * r // 3]
        d.arc(box, 0 if label == 0 else 180, 180 if label == 0 else 360, fill=(0, 0, 0), width=4)
    return img


def make_synthetic_dataset(root: str | Path, n: int = 600, seed: int = 0) -> Path:
    """Write n posts under root in the CLMLF layout (70/15/15; the test split unlabeled, as in MVSA)."""
    root = Path(root)
    rng = random.Random(seed)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        label = rng.choices([0, 1, 2], weights=[0.45, 0.25, 0.30])[0]  # imbalanced, like MVSA
        carrier = rng.choice(["both", "text", "image"])
        text_label = label if carrier in ("both", "text") else 1
        image_label = label if carrier in ("both", "image") else 1
        text = rng.choice(_TEXT[text_label]).format(s=rng.choice(_SUBJECTS)) + rng.choice(_EXTRAS)
        _draw(image_label, rng).save(root / "data" / f"{i + 1}.jpg", quality=90)
        if rng.random() < LABEL_NOISE:
            label = rng.randrange(3)
        rows.append({"id": str(i + 1), "text": text, "emotion_label": label})
    n_train, n_dev = int(0.7 * n), int(0.15 * n)
    splits = {"train": rows[:n_train], "dev": rows[n_train:n_train + n_dev],
              "test": [{"id": r["id"], "text": r["text"]} for r in rows[n_train + n_dev:]]}
    for name, part in splits.items():
        (root / "splits" / f"{name}.json").write_text(json.dumps(part, indent=0))
    (root / "README.md").write_text(
        "SYNTHETIC demo data written by msa_cache.demo_data (not a real dataset): "
        f"{n} template texts and drawn images, seed {seed}.\n"
    )
    return root
