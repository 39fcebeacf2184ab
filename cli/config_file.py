"""`--config FILE` for extract, fit, compare, tune and finetune.

The file (YAML, or JSON, which YAML reads too) maps option names to values; they become the
command's defaults through click's `ctx.default_map`, so a flag given on the command line still
wins. Keys are the flags without dashes, `max_epochs` or `max-epochs` (click's parameter name,
e.g. `seeds`, works too); a repeatable flag takes a list (`seed: [0, 1, 2]`), a flag taking a
comma-separated list takes a string or a list (`heads: [ae-cat, mha]`), a switch a boolean. Each
value goes through the option's own type, range and check, here, so a bad one is reported with its
key and file. An unknown key is an error, never ignored. (A switch without a --no- form, such as
--refit, set true in the file cannot be unset on the command line: click has no flag for it.)

A run directory's config.json is accepted as well: it is turned into the options that reproduce the
run (msa_cache/train/command.py), the same ones its command.yaml holds.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import click
import yaml

from msa_cache.errors import UserError
from msa_cache.settings import shown
from msa_cache.train.command import command_name, command_options, is_run_config

LIST_KEYS_SHOWN = 30  # above this, an unknown-key error points to --help instead of listing every key
# A config file is a few dozen options: bounds far above any real one, far below what hurts. Without
# them a 0.5 KB file of nested anchors expands to billions of values (a "billion laughs"), /dev/zero
# is read forever, and a file nested 10,000 deep overflows the parser's stack.
MAX_BYTES = 4 << 20
MAX_NODES = 100_000  # values after expanding every alias
MAX_DEPTH = 64


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (no python tags) that refuses, before constructing anything, a document
    nested deeper than MAX_DEPTH or expanding to more than MAX_NODES values, and a mapping that
    repeats a key (YAML says keys are unique; PyYAML silently keeps the last)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if repeated:
                    raise yaml.constructor.ConstructorError(None, None, f"key {shown(key)} appears twice",
                                                            key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root) -> int:
    """How many values the document holds once every alias is expanded (its tree size), counted over the
    shared nodes without expanding them; ComposerError past MAX_NODES or MAX_DEPTH, or on an alias
    inside itself. (Recursion stays within MAX_DEPTH frames: a shared node's height is remembered too.)"""
    known: dict[int, tuple[int, int]] = {}  # id(node) -> (size, height)
    busy: set[int] = set()

    def refuse(problem: str, node):
        raise yaml.composer.ComposerError(None, None, problem, node.start_mark)

    def measure(node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in known:
            size, height = known[key]
        elif key in busy:
            refuse("an alias refers to a node that contains it", node)
        else:
            if depth > MAX_DEPTH:
                refuse(f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded", node)
            busy.add(key)
            children = (node.value if isinstance(node, yaml.SequenceNode) else
                        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
            size, height = 1, 1
            for child in children:
                child_size, child_height = measure(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
                if size > MAX_NODES:
                    refuse(f"it expands to more than {MAX_NODES:,} values (nested aliases)", node)
            busy.discard(key)
            known[key] = size, height
        if depth + height > MAX_DEPTH + 1:
            refuse(f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded", node)
        return size, height

    return measure(root, 1)[0]


class ConfigFileError(click.ClickException):
    """One line, exit 2 (the msa-cache group prints it as `error: ...`)."""

    exit_code = 2


def _fail(what: str, path: Path, hint: str) -> None:
    raise ConfigFileError(f"{what} ({path}): {hint}")


def config_option(reproduces_runs: bool = False):
    """Decorator adding `--config FILE` to a command (eager: read before the other options are parsed).
    reproduces_runs: the command makes run directories (fit, finetune), whose files --config takes back."""
    runs = ". A run's command.yaml or config.json reproduces that run" if reproduces_runs else ""
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
        callback=_apply_config, metavar="FILE",
        help="YAML or JSON file of option values (keys: the flags without dashes, e.g. `batch_size: 32`); "
             f"flags given on the command line override it{runs}")


def read_config_file(path: Path) -> dict:
    """The file's mapping; ConfigFileError for a missing, unreadable, unparsable or non-mapping file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # never more: the path may be /dev/zero or a huge file
        if len(raw) > MAX_BYTES:
            _fail(f"config file is larger than {MAX_BYTES >> 20} MB", path, "give a YAML or JSON file of "
                  "`option: value` lines")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        _fail("no such config file", path, "give a YAML or JSON file of `option: value` lines")
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"config file is unreadable ({type(e).__name__})", path, "give a UTF-8 YAML or JSON file")
    try:
        data = yaml.load(text, Loader=BoundedLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())[:200]
        raise ConfigFileError(f"config file is not valid YAML or JSON ({where}): {problem}") from None
    if not isinstance(data, dict):
        what = "config file is empty" if data is None else f"config file holds a {type(data).__name__}, not a mapping"
        _fail(what, path, "write one `option: value` per line")
    return data


def _keys(command: click.Command) -> dict[str, click.Option]:
    """Accepted key -> option: each long flag without its dashes, with _ or -, and the parameter name."""
    out = {}
    for p in command.params:
        if not isinstance(p, click.Option) or p.name == "config_file":
            continue
        for name in [p.name, *(o.lstrip("-") for o in p.opts if o.startswith("--"))]:
            out[name.replace("-", "_")] = p
    return out


def _flag_keys(command: click.Command) -> list[str]:
    """The keys as a user writes them: each option's first long flag, with underscores."""
    return sorted({next(o for o in p.opts if o.startswith("--")).lstrip("-").replace("-", "_")
                   for p in _keys(command).values()})


def _unknown(key, command: click.Command, path: Path) -> None:
    keys = _flag_keys(command)
    close = difflib.get_close_matches(str(key).replace("-", "_"), keys, n=3)
    guess = f"did you mean {' or '.join(repr(k) for k in close)}? The" if close else "the"
    listing = (f" keys of `msa-cache {command.name}` are {', '.join(keys)}" if len(keys) <= LIST_KEYS_SHOWN else
               f" keys are the flags of `msa-cache {command.name} --help` without dashes (`batch_size: 32` for "
               "--batch-size)")
    _fail(f"unknown key {shown(key)}", path, guess + listing)


def _shaped(p: click.Option, key: str, value, path: Path):
    """The value in the form the option takes: a list for a repeatable flag, one comma-separated string
    for a flag taking a comma-separated list (a string option), else one scalar."""
    if isinstance(value, dict):
        _fail(f"key '{key}' takes a value, not a mapping", path, "write `key: value`")
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        _fail(f"key '{key}' holds a nested list or mapping", path, f"write `{key}: VALUE` or `{key}: [A, B]`")
    if p.multiple:
        values = list(value) if isinstance(value, list) else [value]
        for v in values:
            _scalar_fits(p, key, v, path)
        return values
    if isinstance(value, list):
        if isinstance(p.type, click.types.StringParamType):
            return ",".join(str(v) for v in value)
        _fail(f"key '{key}' takes one value, not a list", path, f"write `{key}: VALUE`")
    _scalar_fits(p, key, value, path)
    return value


def _scalar_fits(p: click.Option, key: str, value, path: Path) -> None:
    """A YAML bool or float where the option takes a whole number (or a bool where it takes a number) is
    refused, as on the command line; click's own types would turn `true` or 1.9 into 1."""
    if p.is_flag or isinstance(value, str):
        return
    if isinstance(p.type, click.types.IntParamType) and (isinstance(value, (bool, float))):
        _fail(f"bad value for key '{key}'", path, f"{shown(value)} is not a whole number")
    if isinstance(p.type, click.types.FloatParamType) and isinstance(value, bool):
        _fail(f"bad value for key '{key}'", path, f"{shown(value)} is not a number")


def _run_options(ctx: click.Context, data: dict, path: Path) -> dict:
    """A run's config.json as the options that reproduce it (for the command that made it)."""
    try:
        from msa_cache.train.rundir import validate_run_config  # torch, sklearn: only for a run's config

        validate_run_config(data, path)
    except UserError as e:
        raise ConfigFileError(str(e)) from None
    made_by = command_name(data)
    if ctx.command.name != made_by:
        _fail(f"a `{made_by}` run's config.json given to `msa-cache {ctx.command.name}`", path,
              f"reproduce the run with `msa-cache {made_by} --config {path}`")
    try:
        return command_options(data)
    except (KeyError, TypeError, ValueError) as e:
        _fail(f"config.json cannot be said as a command ({type(e).__name__}: {e})", path,
              "write the options into a YAML file instead")


def _apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    path = Path(value)
    data = read_config_file(path)
    if is_run_config(data):
        data = _run_options(ctx, data, path)
    keys = _keys(ctx.command)
    defaults: dict = {}
    given: dict[str, str] = {}
    for key, raw in data.items():
        p = keys.get(str(key).replace("-", "_"))
        if p is None:
            _unknown(key, ctx.command, path)
        if p.name in given:
            _fail(f"keys '{given[p.name]}' and '{key}' set the same option", path, "keep one of them")
        given[p.name] = key
        if raw is None:  # `key:` with no value: the option's own default
            continue
        shaped = _shaped(p, key, raw, path)
        try:
            p.process_value(ctx, shaped)  # the option's type, range and callback; the parsed value comes later
        except click.BadParameter as e:
            _fail(f"bad value for key '{key}'", path, " ".join(e.message.split())[:300])  # it repeats the value
        defaults[p.name] = shaped
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
