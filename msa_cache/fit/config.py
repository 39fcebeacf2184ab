"""What defines a run: the manifest, the caches, the head with its options, the
trainer settings and the seed. Its hash names the run directory, so a finished
run is found and skipped instead of recomputed."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from msa_cache.heads import make_config
from msa_cache.metrics import MONITOR_NAMES
from msa_cache.settings import check_settings, identity_fields, recorded_fields
from msa_cache.train.identity import head_revision, monitor_for
from msa_cache.provenance import from_saved
from msa_cache.search_space import SEARCH, Range


@dataclass
class TrainConfig:
    # SEARCH: the range `msa-cache tune` samples (msa_cache/search_space.py); a searched field
    # defaults to None, which tune reads as "not set by the user".
    # The CLI flags (cli/options.train_options) are generated from these fields and their metadata:
    # help, type (for a None default), min / max / min_open, choices; as head Config fields do.
    # lr None: 1e-3 (the seed-000 Adam setting; also fine for AdamW heads).
    lr: float | None = field(default=None, metadata={SEARCH: Range(1e-4, 1e-2, log=True), "type": float, "min": 0,
                                                     "min_open": True, "help": "learning rate [default 1e-3]"})
    # weight_decay None: 0 for Adam heads, 0.01 for AdamW heads.
    weight_decay: float | None = field(default=None, metadata={SEARCH: Range(1e-6, 0.1, log=True), "type": float,
                                                               "min": 0,
                                                               "help": "[default 0 for Adam heads, 0.01 for AdamW]"})
    optimizer: str | None = field(default=None, metadata={
        "choices": ("adam", "adamw"), "help": "[default: the head's own: adam for seed-000 heads, else adamw]"})
    batch_size: int = field(default=64, metadata={"min": 1})
    max_epochs: int = field(default=30, metadata={"min": 1})
    patience: int = field(default=5, metadata={"min": 0, "help": "early stopping: epochs without a better dev score"})
    monitor: str | None = field(default=None, metadata={  # resolved per run (RunSpec.resolved)
        "choices": MONITOR_NAMES,
        "help": "dev metric for early stopping and the leaderboard order [default: the manifest's, what "
                "its dataset's papers report: weighted-f1 for MVSA and TumEmo, macro-f1 for "
                "Twitter-15/17, HFM and memes]"})
    class_weights: str = field(default="none", metadata={"choices": ("none", "balanced")})
    oversample: bool = field(default=False, metadata={"help": "draw train rows with equal class probability"})
    text_pool: str = field(default="cls", metadata={"choices": ("cls", "mean"),
                                                    "help": "text vector used as the pooled text feature"})
    amp: bool = field(default=True, metadata={"help": "mixed precision on CUDA"})
    # In the identity only when set ("when-set"): runs made before it keep their hashes and config.json.
    modality_dropout: float = field(default=0.0, metadata={
        "min": 0.0, "max": 1.0, "max_open": True, "identity": "when-set",
        "help": "probability that a train row loses one modality (text or image, never both) in a step; the "
                "head's own missing input stands in (docs/methods.md, Missing modality). uni-text/uni-image: "
                "no effect; probe: its expected loss in closed form"})
    # Not part of the run's identity (they change speed, not results on one device):
    # its flag is cli/options.device_option (checked by the device resolver)
    device: str = field(default="auto", metadata={"identity": False})
    workers: int = field(default=0, metadata={"min": 0, "identity": False,
                                              "help": "DataLoader workers that prefetch token batches from HDF5"})

    def __post_init__(self):
        # ValueError naming the flag when a setting cannot train (e.g. --batch-size 0 would train
        # nothing and still write a finished run): the same rule as the CLI's flags.
        check_settings(self)

    def identity(self) -> dict:
        return identity_fields(self)


@dataclass
class RunSpec:
    manifest: str
    caches: dict[str, str]  # role ("text", "image", "clip") -> cache folder
    head: str
    head_options: dict[str, Any] = field(default_factory=dict)  # resolved: every Config field
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    # Cross-validation (see fit/folds.py): 0 folds = the manifest's own split. The fold
    # index and the refit settings name the directory inside the family (seed-K/fold-k,
    # seed-K/refit-...); the number of folds and their seed are part of the family's hash.
    cv_folds: int = 0
    cv_fold: int = 0
    cv_seed: int = 0
    refit: dict[str, Any] | None = None  # what the folds chose, e.g. {"epochs": 7} or {"C": 0.1}

    def identity(self, manifest_fingerprint: str, cache_identity: dict) -> dict:
        out = {
            "manifest_fingerprint": manifest_fingerprint,
            "caches": cache_identity,
            "head": self.head,
            "head_options": self.head_options,
            "train": self.train.identity(),
            **head_revision(self.head),
        }
        if self.cv_folds:  # only then: runs made before cross-validation existed keep their hash
            out["cv"] = {"folds": self.cv_folds, "seed": self.cv_seed}
        return out

    @property
    def head_config(self):
        """The head's typed Config: the options validated (unknown or out-of-range ones refused), defaults filled."""
        return make_config(self.head, self.head_options)

    def resolved(self, manifest) -> "RunSpec":
        """A copy with every head option filled from the head's Config and a monitor left unset (None) set to
        the manifest's default: the spec a run's identity is hashed from and its config.json records."""
        train = self.train if self.train.monitor is not None else replace(self.train, monitor=monitor_for(self.train, manifest))
        return replace(self, head_options=asdict(self.head_config), train=train)

    def to_dict(self) -> dict:
        # the train config as recorded: a "when-set" setting left at its default is left out (from_dict fills it)
        return {**asdict(self), "train": recorded_fields(self.train)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        train = from_saved(TrainConfig, d["train"])
        return cls(d["manifest"], d["caches"], d["head"], d.get("head_options", {}), train, d.get("seed", 0),
                   d.get("cv_folds", 0), d.get("cv_fold", 0), d.get("cv_seed", 0), d.get("refit"))



def run_dir(runs_root: str | Path, manifest_name: str, spec: RunSpec, chash: str, changed: dict) -> Path:
    """runs/<manifest>/<head>[-<changed options>][-md<modality dropout>]-<hash>/seed-<k>: readable, unique.

    Cross-validation: <head>[-<options>]-cv<K>-<hash>/seed-<k>/fold-<i> and .../seed-<k>/refit-<choice>."""
    slug = "".join(f"-{k}{v}" for k, v in sorted(changed.items()))[:60].replace("/", "_").replace(" ", "")
    if spec.train.modality_dropout:  # a train setting the name shows: compare --all-runs and report label by it
        slug += f"-md{spec.train.modality_dropout:g}"
    if not spec.cv_folds:
        return Path(runs_root) / manifest_name / f"{spec.head}{slug}-{chash}" / f"seed-{spec.seed}"
    seed_dir = Path(runs_root) / manifest_name / f"{spec.head}{slug}-cv{spec.cv_folds}-{chash}" / f"seed-{spec.seed}"
    if spec.refit is not None:
        return seed_dir / refit_name(spec.refit)
    return seed_dir / f"fold-{spec.cv_fold}"


def refit_name(refit: dict) -> str:
    """Folder of a refit run inside its CV seed directory, e.g. refit-epochs7 or refit-C0.1."""
    return "refit" + "".join(f"-{k}{v}" for k, v in sorted(refit.items()))
