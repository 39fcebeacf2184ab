"""Options shared by the commands: head and trainer flags (fit, compare, tune, finetune), the data
and cross-validation flags, --device, --threads and --tensorboard.

Head flags are generated from the head catalog's Config dataclasses (heads/catalog.py), so the
CLI can never drift from the heads: a field `latent` becomes `--latent`, a bool
field `ipfl=True` becomes `--ipfl/--no-ipfl`. Setting a flag that the chosen
head does not have is an error, never silently ignored.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from msa_cache.device import resolve_device
from msa_cache.heads import HEADS
from msa_cache.heads.registry import check_option, option_fields
from msa_cache.settings import HEAD_INT_RANGE, field_range
from msa_cache.fit.config import TrainConfig

TRAIN_FLAGS = {f.name for f in dataclasses.fields(TrainConfig)}


def _scalar_type(f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else None
    return {bool: bool, int: int, float: float}.get(type(default), str)


def _click_type(f: dataclasses.Field):
    """click.IntRange / FloatRange from the field's range (msa_cache/settings.py), else its plain type."""
    bounds = field_range(f, HEAD_INT_RANGE)
    if bounds is None:
        return _scalar_type(f)
    kind, lo, hi, min_open, _ = bounds
    if kind is int:
        return click.IntRange(lo, hi)
    return click.FloatRange(lo, hi, min_open=min_open)


def _help(entries) -> str:
    f = entries[0][1]
    heads = ", ".join(h for h, _ in entries)
    defaults = sorted({str(fl.default) for _, fl in entries})
    return f"{f.metadata.get('help', '')} [heads: {heads}; default {'/'.join(defaults)}]"


def head_flags(multi: bool):
    """Decorator adding one flag per head Config field. multi=True: comma-separated lists (grids)."""

    def deco(fn):
        for name, entries in sorted(option_fields().items(), reverse=True):
            if name in TRAIN_FLAGS:
                raise RuntimeError(f"head option '{name}' clashes with a trainer flag; rename the field")
            flag = name.replace("_", "-")
            kind = _scalar_type(entries[0][1])
            if multi:
                fn = click.option(f"--{flag}", name, default=None, help=_help(entries) + " (comma-separated list)")(fn)
            elif kind is bool:
                fn = click.option(f"--{flag}/--no-{flag}", name, default=None, help=_help(entries))(fn)
            else:
                fn = click.option(f"--{flag}", name, type=_click_type(entries[0][1]), default=None,
                                  help=_help(entries))(fn)
        return fn

    return deco


def _parse(value: str, kind):
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise click.BadParameter(f"'{value}' is not a boolean (true/false)")
    try:
        return kind(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not {'an integer' if kind is int else 'a number'}") from None


def pop_head_options(kwargs: dict, multi: bool) -> dict:
    """Remove head flags from click's kwargs; return those the user set (lists when multi)."""
    out = {}
    for name, entries in option_fields().items():
        value = kwargs.pop(name, None)
        if value is None:
            continue
        if multi:
            kind = _scalar_type(entries[0][1])
            out[name] = [_parse(v.strip(), kind) for v in str(value).split(",") if v.strip()]
            if not out[name]:
                raise click.BadParameter("empty list", param_hint=f"--{name.replace('_', '-')}")
            for head, f in entries:
                for v in out[name]:
                    try:
                        check_option(head, f, v)
                    except ValueError as e:
                        raise click.BadParameter(str(e), param_hint=f"--{name.replace('_', '-')}") from None
        else:
            out[name] = value
    return out


def data_options(fn):
    """Which manifest and caches to train on."""
    opts = [
        click.option("--manifest", "manifest", type=click.Path(dir_okay=False), default=None,
                     help="manifest Parquet file [default: the only one in manifests/]"),
        click.option("--cache-root", default="cache", show_default=True, type=click.Path(file_okay=False),
                     help="where `extract` wrote the caches"),
        click.option("--text-cache", default=None, help="text encoder cache name [default: the only one]"),
        click.option("--image-cache", default=None, help="image encoder cache name [default: the only one]"),
        click.option("--clip-cache", default=None, help="a `clip` cache to add as clip_text/clip_image (INFIG's GAM)"),
        click.option("--runs", "runs_root", default="runs", show_default=True, type=click.Path(file_okay=False),
                     help="where run directories go"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


MAX_SEEDS = 1000  # seeds 0..N-1 of each configuration: far above any use, far below a typo
MAX_FOLDS = 100  # far above any use; a typo such as 10**12 would otherwise allocate that many fold specs


def _folds(ctx, param, value):
    if value is not None and (value < 0 or value == 1 or value > MAX_FOLDS):
        raise click.BadParameter(f"{value} folds: give 0 (the manifest's own split) or K from 2 to {MAX_FOLDS}")
    return value


def _fold_seed(ctx, param, value):
    if value is not None and not 0 <= value < 2 ** 32:
        raise click.BadParameter(f"{value}: a seed is from 0 to 2**32 - 1")
    return value


def cv_options(fn):
    opts = [
        click.option("--cv", type=int, default=0, show_default=True, callback=_folds,
                     help="K-fold cross-validation on train+dev pooled (stratified; test untouched): K runs per "
                          "seed, scored on their out-of-fold predictions; 0 = the manifest's own split"),
        click.option("--cv-seed", type=int, default=0, show_default=True, callback=_fold_seed, help="seed of the fold assignment"),
        click.option("--refit", is_flag=True,
                     help="with --cv: also train on all of train+dev for the median of the folds' best epochs"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def field_option(f: dataclasses.Field):
    """One click option for a settings-dataclass field, from its metadata (as head flags are): `help`,
    `choices`, `min` / `max` / `min_open` (int and float fields; `type` where the default is None);
    a bool field becomes --x/--no-x; a non-None default is shown."""
    md, flag = f.metadata, f.name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else None
    kw = {"default": default, "show_default": default is not None}
    if md.get("help"):
        kw["help"] = md["help"]
    if isinstance(default, bool):
        return click.option(f"--{flag}/--no-{flag}", **kw)
    kind = md.get("type") or type(default)
    if "choices" in md:
        kw["type"] = click.Choice(list(md["choices"]))
    elif kind is int:
        kw["type"] = click.IntRange(md.get("min"), md.get("max"))
    elif kind is float:
        kw["type"] = click.FloatRange(md.get("min"), md.get("max"), min_open=bool(md.get("min_open")),
                                      max_open=bool(md.get("max_open")))
    return click.option(f"--{flag}", **kw)


def dataclass_options(cls, custom: dict | None = None, order: tuple[str, ...] | None = None):
    """Decorator: one flag per field of `cls`, in field order (or `order`, which must name every field);
    custom[name](field) builds a field's own option."""
    custom = custom or {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if order is not None and sorted(order) != sorted(fields):
        raise RuntimeError(f"{cls.__name__}: the flag order must name each field once")

    def deco(fn):
        for name in reversed(order or tuple(fields)):
            f = fields[name]
            fn = (custom[name](f) if name in custom else field_option(f))(fn)
        return fn

    return deco


def train_options(fn):
    """Trainer settings: one flag per TrainConfig field (fit/config.py holds their help and ranges)."""
    return dataclass_options(TrainConfig, {"device": lambda f: device_option(f.default)})(fn)


def _check_device(ctx, param, value: str) -> str:
    resolve_device(value)  # a ValueError here is the one-line error, before any work starts
    return value


def device_option(default: str = "auto"):
    """`--device`, checked by the same function every command resolves it with."""
    return click.option("--device", default=default, show_default=True, callback=_check_device,
                        help="auto (this process's GPU: cuda:LOCAL_RANK under torchrun, else cuda:0; CPU without "
                             "one), cpu, cuda, cuda:N")


def pop_train_config(kwargs: dict) -> TrainConfig:
    return TrainConfig(**{k: kwargs.pop(k) for k in list(kwargs) if k in TRAIN_FLAGS})


def resolve_manifest(path: str | None) -> Path:
    if path is not None:
        return Path(path)
    found = sorted(Path("manifests").glob("*.parquet"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.UsageError("no manifest in manifests/; build one with `msa-cache manifest <format>` or pass --manifest")
    raise click.UsageError(f"several manifests in manifests/ ({', '.join(p.name for p in found)}); choose one with --manifest")


def head_names() -> list[str]:
    return sorted(HEADS)


def _request_threads(ctx, param, value: int | None) -> int | None:
    from msa_cache import threads

    threads.request(value)
    return value


def threads_option(fn):
    """`--threads N`: torch's intra-op CPU threads (msa_cache/threads.py decides without it). It changes speed,
    not results, so it is no TrainConfig field and stays out of the run identity."""
    return click.option("--threads", type=click.IntRange(1), default=None, callback=_request_threads,
                        expose_value=False,
                        help="CPU threads for torch [default: 1 for pooled and small token heads; the available "
                             "cores, at most 8, for extraction, fine-tuning and large token heads (mdse, infig); "
                             "left to OMP_NUM_THREADS / MKL_NUM_THREADS where set]")(fn)


def _check_tensorboard(ctx, param, value: bool) -> bool:
    if value:
        from msa_cache.train.tensorboard_log import require_tensorboard

        require_tensorboard()  # a missing package fails here, at option parse, before any work
    return value


def tensorboard_option(fn):
    """`--tensorboard`: an output-only flag (no TrainConfig field: it changes no result, so it stays out of
    the run identity)."""
    return click.option("--tensorboard", is_flag=True, callback=_check_tensorboard,
                        help="also write each epoch's loss terms and dev metrics as TensorBoard events in "
                             "<run>/tensorboard (finished runs: from their history.jsonl); view with "
                             "`tensorboard --logdir runs/<manifest>`. Needs pip install 'msa-cache[tb]'")(fn)
