"""The command that reproduces a run, from its config.json: as `--config` options (command.yaml,
written beside config.json in every run directory) and as one shell line (model cards, logs).

Every option is spelled out, defaults included, so the command gives the same run (same identity,
same directory: "already finished, skipped") even if a default changes later. Keys are the
commands' flags with underscores (`max_epochs` for `--max-epochs`); lists are repeatable flags
(`seed`, `encoder`). Paths are as the run was given them: relative ones are relative to the folder
the run was started from.

Works on the dict alone (no fine-tune import: runs/ sits below finetune/), for both modes:
cached-feature runs (`msa-cache fit`) and fine-tune runs (`"mode": "finetune"`, `msa-cache finetune`).
"""
from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from msa_cache.train.identity import FINETUNE, run_mode

COMMAND_FILE = "command.yaml"
CACHE_ROLES = ("text", "image", "clip")  # fit's --text-cache / --image-cache / --clip-cache


def is_run_config(data) -> bool:
    """A run directory's config.json (as opposed to a plain options file): it records the run's spec."""
    return isinstance(data, dict) and isinstance(data.get("spec"), dict) and "classes" in data


def command_name(config: dict) -> str:
    """The msa-cache command that made the run: "finetune" or "fit"."""
    return "finetune" if run_mode(config) == FINETUNE else "fit"


def command_options(config: dict) -> dict:
    """The `--config` options (flag names with underscores -> values) that reproduce this seed's run,
    from its config.json; ValueError where the spec cannot be said as a command."""
    spec = config["spec"]
    if command_name(config) == "finetune":
        opts = _finetune_model(spec)
    else:
        opts = {"head": spec["head"], "manifest": spec["manifest"], **_cache_options(spec["caches"])}
    if config.get("runs") is not None:  # recorded since command.yaml exists; else the default `runs`
        opts["runs"] = str(config["runs"])
    for key, value in spec["train"].items():
        if key == "unfreeze":  # a list in the spec, one comma-separated flag (`none`: no encoder)
            value = ",".join(value) or "none"
        if value is not None:  # None: the flag's own default (nothing to say)
            opts[key] = value
    for key, value in spec.get("head_options", {}).items():
        if value is not None:
            opts[key] = value
    if spec.get("cv_folds"):
        opts["cv"], opts["cv_seed"] = spec["cv_folds"], spec.get("cv_seed", 0)
        if spec.get("refit") is not None:
            opts["refit"] = True
    opts["seed"] = [spec["seed"]]
    return opts


def _cache_options(caches: dict) -> dict:
    """--cache-root and the caches' names: each cache is <cache root>/<manifest>/<name> (resolve_caches)."""
    paths = {role: Path(p) for role, p in caches.items()}
    unknown = sorted(set(paths) - set(CACHE_ROLES))
    if unknown:
        raise ValueError(f"cache role(s) {unknown} have no fit flag; known roles: {', '.join(CACHE_ROLES)}")
    roots = {str(p.parent.parent) for p in paths.values()}
    if len(roots) != 1:
        raise ValueError(f"the caches lie under different roots ({sorted(roots)}): one `--cache-root` cannot name "
                         "them; put them under one cache root")
    return {"cache_root": roots.pop(), **{f"{role}_cache": paths[role].name for role in CACHE_ROLES if role in paths}}


def _finetune_model(spec: dict) -> dict:
    """The head or baseline and its weights, as cli/finetune.py takes them (the inverse of its mapping)."""
    encoders, baseline = list(spec["encoders"]), spec.get("baseline")
    if baseline is None:
        return {"head": spec["head"], "encoder": encoders, "manifest": spec["manifest"]}
    # A baseline records its --model first (where it has one), then its --encoder's (Baseline.spec_encoders).
    opts = {"baseline": baseline, **({"model": encoders[0]} if encoders else {}),
            **({"encoder": encoders[1:]} if encoders[1:] else {})}
    return {**opts, "manifest": spec["manifest"]}


def command_line(config: dict) -> str:
    """The full `msa-cache fit|finetune ... --seed K` line that reproduces the run, shell-quoted."""
    args = ["msa-cache", command_name(config)]
    for key, value in command_options(config).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return " ".join(shlex.quote(a) for a in args)


def command_yaml(config: dict) -> str:
    """command.yaml's text: a comment saying how to use it, then the options in command order."""
    name = command_name(config)
    header = (f"# msa-cache {name} --config command.yaml  reproduces this run (finished: skipped).\n"
              "# Flags given on the command line override these values; relative paths are relative to the\n"
              "# folder the run was started from.\n")
    return header + yaml.safe_dump(command_options(config), sort_keys=False, default_flow_style=None)


def write_command(folder: str | Path, config: dict) -> Path:
    """Write command.yaml into a run folder (its tmp folder, before the rename)."""
    path = Path(folder) / COMMAND_FILE
    path.write_text(command_yaml(config))
    return path
