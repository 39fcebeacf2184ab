"""The head catalog: every head's name, options (its Config dataclass) and the traits callers read
before a model is built, in one light module (no torch), as Hugging Face transformers splits a
model's configuration from its modeling code. The model itself (an nn.Module in its own file, e.g.
heads/autoencoder.py) is imported only when `create_head` builds one; it reads its Config and traits
from its entry here (`@head_model(name)` in heads/base.py).

A new head is two files: its model file and one `@register_head(...)` entry below, e.g.

    @register_head("gated", model="msa_cache.heads.gated:GatedHead", paper="...")
    @dataclass
    class GatedConfig(HeadConfig):
        gates: int = field(default=2, metadata={"help": "number of gates"})

The CLI's `--head` choices and head flags, `compare`'s grid, `tune`'s search space, run identities
(name, options, `revision`), the default head list of fit/compare/demo (`default=True`) and what
`explain` can draw (`explains`) all read this table. The registration order is the order of the
default head list.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from msa_cache.search_space import SEARCH, Choice, Range


@dataclass(frozen=True)
class HeadEntry:
    """One head: what is known about it without importing its model."""

    name: str
    # "package.module:Class" of the nn.Module; imported on `model_class()`.
    model: str
    Config: type
    # Where the method comes from, one line (a run's model card cites it; docs/methods.md has the details).
    paper: str = ""
    # The trainer streams token features (text tokens + mask, image patches) from the HDF5 cache only
    # for heads that need them; pooled features are always there and live in memory.
    uses_tokens: bool = False
    # "adam" (seed-000 heads, lr 1e-3) or "adamw".
    optimizer: str = "adamw"
    # Modalities the head requires; None = any non-empty set.
    modalities: tuple[str, ...] | None = None
    # "gradient": the epoch loop (train/loop.py); "closed_form": fit_closed_form on pooled features (probe),
    # which needs frozen features, so `finetune` refuses it.
    fit_mode: str = "gradient"
    # Bumped when a head's computation changes for the same options, so runs made before are not reused
    # (it enters the run identity when > 0; heads at 0 keep their run hashes).
    revision: int = 0
    # Option defaults that differ in `finetune` (encoders in the loop), e.g. INFIG aligns the encoders' layers.
    finetune_defaults: dict = field(default_factory=dict)
    # Reads the caches' hidden layers too ("text@-2", ...; INFIG's align="cache"): open_features(hidden_layers=True).
    uses_hidden_layers: bool = False
    # Config -> the hidden layers (e.g. (-2, -3)) the encoders must also return in fine-tune mode.
    layers_for: Callable[[Any], tuple[int, ...]] | None = None
    # Config -> the image vector the head reads as `pooled`: "pooled" (the mean of the image tokens) or "cls"
    # (the visual [CLS] where the encoder has one); None = "pooled". The field chooser asks before building.
    image_pool_for: Callable[[Any], str] | None = None
    # In the default head list of fit/compare/demo (the "fit-stage" heads the demo compares).
    default: bool = False
    # The thread policy's kind of work (msa_cache/threads.py): "small" heads run fastest on one CPU thread,
    # "large" token heads use the available cores.
    compute: str = "small"
    # What the head's `explain_weights` mean (the explain picture's caption); "" = explain cannot draw it.
    explains: str = ""
    # The explain weights are one softmax over both modalities (the picture then says how they split).
    explains_one_softmax: bool = False

    def model_class(self):
        """The head's nn.Module class (imports its model file, and torch)."""
        module, _, attr = self.model.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if getattr(cls, "name", None) != self.name:
            raise RuntimeError(f"{self.model} is not decorated with @head_model({self.name!r})")
        return cls

    def encoder_layers(self, options: dict) -> tuple[int, ...]:
        """Hidden layers (beyond the last) the encoders must return in fine-tune mode; () for most heads."""
        if self.layers_for is None:
            return ()
        return tuple(self.layers_for(self.config(options)))

    def image_pool(self, options: dict) -> str:
        """The image vector the head reads as `pooled` (cache.fields.head_fields picks the field): "pooled"
        (the mean of the image tokens) or "cls" (the visual [CLS] where the encoder has one, else that mean)."""
        return "pooled" if self.image_pool_for is None else self.image_pool_for(self.config(options))

    def config(self, options: dict):
        """The Config of `options`, ignoring names that are not its fields."""
        known = {f.name for f in dataclasses.fields(self.Config)}
        return self.Config(**{k: v for k, v in options.items() if k in known})


HEADS: dict[str, HeadEntry] = {}


def register_head(name: str, *, model: str, **traits) -> Callable[[type], type]:
    """Decorator for a head's Config dataclass (or call it on a shared one: `register_head(...)(HeadConfig)`):
    records the entry `name` with the model's dotted path and its traits (HeadEntry's fields)."""

    def wrap(config: type) -> type:
        if name in HEADS:
            raise ValueError(f"head '{name}' registered twice")
        HEADS[name] = HeadEntry(name, model, config, **traits)
        return config

    return wrap


def default_heads() -> list[str]:
    """The default head list of fit/compare/demo, in registration order."""
    return [name for name, entry in HEADS.items() if entry.default]


# ---------------------------------------------------------------------------
# the options every head has


@dataclass
class HeadConfig:
    """Fields every head accepts."""

    hidden: int = field(default=256, metadata={"help": "width of the classifier MLP's hidden layer",
                                               SEARCH: Choice((128, 256, 512))})
    dropout: float = field(default=0.1, metadata={"help": "dropout before classifier layers", "max": 0.99,
                                                  SEARCH: Range(0.0, 0.5)})


# ---------------------------------------------------------------------------
# the heads, in the order of the default head list

_UNI = "seed 000's Uni-Text / Uni-Image baselines (docs/methods.md)"
register_head("uni-text", model="msa_cache.heads.uni:UniTextHead", paper=_UNI, modalities=("text",),
              default=True)(HeadConfig)
register_head("uni-image", model="msa_cache.heads.uni:UniImageHead", paper=_UNI, modalities=("image",),
              default=True)(HeadConfig)


@register_head("probe", model="msa_cache.heads.probe:ProbeHead", fit_mode="closed_form", default=True,
               paper="none: the linear-probe reference every head must beat (docs/methods.md)")
@dataclass
class ProbeConfig:  # not HeadConfig: a linear probe has no hidden layer or dropout to set
    c_grid: str = field(
        default="1e-3,1e-2,1e-1,1,10,100",
        metadata={"help": "probe: comma-separated inverse L2 strengths C tried on dev (larger C = weaker penalty)"},
    )
    max_iter: int = field(default=1000, metadata={"help": "probe: lbfgs iterations per C", "max": 10**6})


register_head("late", model="msa_cache.heads.late:LateFusionHead", default=True,
              paper="none: a late-fusion ensemble of per-modality classifiers (docs/methods.md)")(HeadConfig)

_AE = 'seed 000: autoencoder fusion (docs/methods.md, "ae-cat, ae-add")'


@register_head("ae-add", model="msa_cache.heads.autoencoder:AEAddHead", optimizer="adam", paper=_AE, default=True)
@register_head("ae-cat", model="msa_cache.heads.autoencoder:AECatHead", optimizer="adam", paper=_AE, default=True)
@dataclass
class AEConfig(HeadConfig):
    latent: int = field(default=64, metadata={"help": "width D of the per-modality codes and the fused code (seed: 32/64/128)",
                                              SEARCH: Choice((16, 32, 64, 128, 256))})
    lambda_ce: float = field(default=1.0, metadata={"help": "weight of the classification cross-entropy in the loss"})
    lambda_rec: float = field(default=1.0, metadata={"help": "weight of each modality's reconstruction MSE",
                                                     SEARCH: Range(0.01, 10.0, log=True)})
    lambda_rec_per: str = field(
        default="", metadata={"help": "per-modality overrides of lambda_rec, e.g. 'text=1,image=0.5'"}
    )


_AB = dict(uses_tokens=True, optimizer="adam", default=True, explains="cross-modal attention (mean over queries)",
           paper='seed 000: attention-block fusion (docs/methods.md, "ab-cat, ab-add")')


@register_head("ab-add", model="msa_cache.heads.attention_block:ABAddHead", **_AB)
@register_head("ab-cat", model="msa_cache.heads.attention_block:ABCatHead", **_AB)
@dataclass
class ABConfig(HeadConfig):
    latent: int = field(default=64, metadata={"help": "width D of the per-modality encoders and of attention (seed: 32/64/128)",
                                              SEARCH: Choice((32, 64, 128, 256))})


@register_head("mha", model="msa_cache.heads.mha:MHAHead", uses_tokens=True, default=True,
               paper='seed 002: multi-head attention fusion over stage-1 encoder embeddings (docs/methods.md, "mha")')
@dataclass
class MHAConfig(HeadConfig):
    width: int = field(default=256, metadata={"help": "model width of the joint token sequence (divisible by --num-heads)",
                                              SEARCH: Choice((128, 256, 512))})
    num_heads: int = field(default=4, metadata={"help": "number of attention heads"})
    layers: int = field(default=1, metadata={"help": "number of transformer encoder layers"})
    grid_pos: bool = field(default=False, metadata={
        "help": "add a learned 2-D (row + column) position embedding to image tokens on a square grid "
                "(CNN caches: their cells carry no position; text and ViT tokens already do)"})


# MDSE: docs/methods.md has the equations; revision 1: the streams paired as eq. 1-3 (runs from before
# computed another model).
@register_head("mdse", model="msa_cache.heads.mdse:MDSE", uses_tokens=True, revision=1, modalities=("text", "image"),
               compute="large", explains="private-feature weight 1 - s",
               paper='Li et al., "Modality-Dependent Sentiments Exploring for Multi-modal Sentiment Classification", '
                     'ICASSP 2024')
@dataclass
class MDSEConfig(HeadConfig):
    width: int = field(default=256, metadata={"help": "common token width d that text and image tokens are projected to (paper: 768)",
                                              SEARCH: Choice((128, 256, 512))})
    num_heads: int = field(default=8, metadata={"help": "attention heads in the co-attention and private self-attention layers"})
    ipfl: bool = field(default=True, metadata={"help": "MDSE: image private feature learning (--no-ipfl: f_v = FF(f^s))"})
    tpfl: bool = field(default=True, metadata={"help": "MDSE: text private feature learning (--no-tpfl: f_z = FF(f^s))"})
    pfl_no_ada: bool = field(default=False, metadata={"help": "MDSE: private features without the SA+FF 'ada' filter, f^p = mean((1-s)*v)"})
    macl: bool = field(default=True, metadata={"help": "MDSE: add the modality-aware contrastive loss (--no-macl: cross-entropy only)"})
    macl_unimodal: bool = field(default=False, metadata={"help": "MDSE: contrast only the unimodal embeddings f_v, f_z (2B rows, not 3B)"})
    # Picked on MVSA-Single dev (README, results), before the issue-12 pairing fix: weighted-F1 72.61 +- 0.35 at
    # 0.03, 72.26 +- 0.30 at 0.1, 71.95 +- 0.71 without the loss (3 seeds); 0.3 and 1.0 were lower on seed 0
    # (71.51, 70.81). After the fix 0.03 gives 73.18 +- 0.80 (README: MDSE before and after).
    lambda_macl: float = field(default=0.03, metadata={"help": "MDSE: weight lambda of the contrastive loss (picked on MVSA-Single dev)",
                                                       SEARCH: Range(0.003, 1.0, log=True)})
    tau: float = field(default=0.07, metadata={"help": "MDSE: temperature of the contrastive loss", "min_open": True})


def _infig_encoder_layers(cfg) -> tuple[int, ...]:
    """-2 .. -M for align="encoder" (the layers HFAM aligns), else ()."""
    if cfg.align != "encoder" or not cfg.hfam:
        return ()
    return tuple(range(-2, -cfg.hfam_layers - 1, -1))


def _infig_image_pool(cfg) -> str:
    """GAM aligns the image encoder's own [CLS] under align="encoder" (image/cls of a ViT; a CNN has none and
    gives the mean of its grid); align="stack" reads no pooled image vector."""
    return "cls" if cfg.align == "encoder" and cfg.gam else "pooled"


# INFIG: docs/methods.md has the equations. Frozen hidden layers stored by `extract --layers` reach the head
# as "text@-k" modalities; they are used by align="encoder", and by "stack" when --hfam-layers reaches below
# the trainable stack. In fine-tune mode the encoders are in the loop, so the paper's wiring is the default:
# GAM and HFAM align the encoders' own layers, and the fusion reads their last layer directly (no trainable
# stack between).
@register_head("infig", model="msa_cache.heads.infig:Infig", uses_tokens=True, uses_hidden_layers=True,
               modalities=("text", "image"), finetune_defaults={"align": "encoder", "stack_layers": 0},
               layers_for=_infig_encoder_layers, image_pool_for=_infig_image_pool, compute="large",
               explains="fusion attention-pooling weight g", explains_one_softmax=True,
               paper='"Integrating Hierarchical Fine-Grained and Global Information for Multimodal Sentiment '
                     'Analysis with Assistance of CLIP" (INFIG)')
@dataclass
class InfigConfig(HeadConfig):
    width: int = field(default=256, metadata={"help": "model width of the per-modality stacks and the fusion encoder",
                                              SEARCH: Choice((128, 256))})
    num_heads: int = field(default=4, metadata={"help": "attention heads per transformer layer"})
    stack_layers: int = field(default=3, metadata={"help": "trainable transformer layers over each modality's tokens "
                                                           "(0: the fusion reads the encoders' own last layer, the paper's "
                                                           "wiring and the finetune default)", "min": 0})
    fusion_layers: int = field(default=3, metadata={"help": "transformer layers of the fusion encoder (paper: 3; 4 for HFM)"})
    embed: int = field(default=128, metadata={"help": "GAM: dimension of the global contrastive embedding"})
    queue_size: int = field(default=1024, metadata={"help": "GAM: momentum keys kept per modality as negatives", "max": 1 << 16})
    momentum: float = field(default=0.995, metadata={"help": "GAM: EMA coefficient of the momentum projections", "max": 1.0})
    gam_temp: float = field(default=0.07, metadata={"help": "GAM: initial value of the learnable temperature", "min_open": True})
    gam_layer: int = field(default=-1, metadata={"help": "GAM: stack layer whose CLS token is aligned (-1 = last)", "min": -64, "max": 64})
    hfam_layers: int = field(default=3, metadata={"help": "HFAM: number M of deepest layers aligned"})
    top_j: int = field(default=2, metadata={"help": "HFAM: top-j most similar tokens summed per token (2 MVSA, 3 HFM/TumEmo)"})
    hfam_tau: float = field(default=0.07, metadata={"help": "HFAM: fixed temperature of the in-batch contrastive losses", "min_open": True})
    lambda_g: float = field(default=0.3, metadata={"help": "weight of the global alignment loss L_g",
                                                   SEARCH: Range(0.03, 1.0, log=True)})
    lambda_f: float = field(default=0.2, metadata={"help": "weight of the fine-grained alignment loss L_f",
                                                   SEARCH: Range(0.03, 1.0, log=True)})
    gam: bool = field(default=True, metadata={"help": "global alignment module (--no-gam ablates it)"})
    hfam: bool = field(default=True, metadata={"help": "hierarchical fine-grained alignment (--no-hfam ablates it)"})
    clip: bool = field(default=True, metadata={"help": "use clip_image/clip_text pooled features in GAM when the cache has them"})
    align: str = field(default="stack", metadata={
        "help": "layers GAM/HFAM align: 'encoder' = the encoders' own last M layers (cache: needs extract --layers "
                "-1,-2,..; the finetune default), 'stack' = the trainable stack over the tokens (the fit default)"})
