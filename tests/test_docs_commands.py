"""Every `msa-cache ...` command in a fenced block of README.md and docs/usage.md parses: the command
exists and every flag, choice, type and range is one the CLI accepts, so the docs cannot drift from it.

Each line is parsed with click's `make_context` (options, types, ranges, choices, unknown flags, the
`--config` file; nothing runs), through the group `msa_cache_cli.main.main` down to the leaf command.
Rules:
- `\\` continuations are joined; shell comments (`# ...`) are dropped by shlex;
- a line holding a placeholder is skipped: `...`, `<NAME>`, `[optional]`, `{a,b}` or `a|b`
  (the docs write these only where a reader fills something in); the test asserts that most lines
  are checked, so the rule cannot make it pass vacuously;
- paths need not exist (they are the reader's files): `click.Path(exists=True)` is relaxed;
- a ```yaml block whose first line is `# NAME.yaml ...` is written to NAME.yaml in the folder the
  lines are parsed in, so `--config NAME.yaml` examples are checked with the docs' own file;
- `--tensorboard` is parsed without checking that the optional package is installed;
- the model folder a documented `export-encoder RUN OUT` writes is made (empty) after that line, so a
  later `extract --encoder OUT` line finds it, as it would after running the commands in order.
The cheap lines also run for real: `manifest info` on the manifest the demo writes.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from msa_cache_cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/usage.md")
PLACEHOLDER = re.compile(r"\.\.\.|…|<[^<>\s]+>|\[|\]|\{|\}|\|")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(\S*)")


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(info string, first line number, lines) of every fenced code block."""
    blocks, inside, lang, start, lines, fence = [], False, "", 0, [], ""
    for no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if not inside and m:
            inside, fence, lang, start, lines = True, m.group(1), m.group(2), no + 1, []
        elif inside and line.strip().startswith(fence[0] * 3) and not line.strip().strip(fence[0]):
            blocks.append((lang, start, lines))
            inside = False
        elif inside:
            lines.append(line)
    return blocks


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every `msa-cache ...` line in a fenced block, continuations joined."""
    out = []
    for _lang, start, lines in fenced_blocks(text):
        joined, first = "", None
        for i, line in enumerate(lines):
            if first is None:
                first = start + i
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            joined += line
            words = joined.split()
            if words and (words[0] == "msa-cache" or words[0].endswith("/msa-cache")):
                out.append((first, joined.strip()))
            joined, first = "", None
    return out


def config_files(text: str) -> dict[str, str]:
    """The ```yaml blocks that name their file in their first line (`# grid.yaml: ...`)."""
    out = {}
    for lang, _start, lines in fenced_blocks(text):
        m = re.match(r"#\s*([\w.-]+\.ya?ml)\b", lines[0].strip()) if lang == "yaml" and lines else None
        if m:
            out[m.group(1)] = "\n".join(lines) + "\n"
    return out


def parse(args: list[str]) -> click.Context:
    """Parse args through the group down to the leaf command, as `msa-cache ARGS` would, without running it."""
    command, name, parent = cli, "msa-cache", None
    while isinstance(command, click.Group):
        # the group's own options (--debug) come before the subcommand's name
        i = next((k for k, a in enumerate(args) if not a.startswith("-")), None)
        if i is None:
            raise click.UsageError(f"'{name}' needs a subcommand")
        parent = command.make_context(name, args[:i + 1], parent=parent, resilient_parsing=False)
        name, command, args = command.resolve_command(parent, args[i:])
    return command.make_context(name, args, parent=parent, resilient_parsing=False)


def _commands(group: click.Group):
    for name in group.list_commands(None):
        cmd = group.get_command(None, name)
        yield cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd)


@pytest.fixture
def docs_cwd(tmp_path, monkeypatch):
    """A folder to parse in, holding the docs' named YAML files; paths relaxed, the tensorboard check off."""
    for doc in DOCS:
        for name, body in config_files((ROOT / doc).read_text(encoding="utf-8")).items():
            (tmp_path / name).write_text(body)
    monkeypatch.chdir(tmp_path)
    for cmd in _commands(cli):
        for p in cmd.params:
            if isinstance(p.type, click.Path) and p.type.exists:
                monkeypatch.setattr(p.type, "exists", False)
    import msa_cache.train.tensorboard_log as tensorboard_log

    monkeypatch.setattr(tensorboard_log, "require_tensorboard", lambda: None)
    return tmp_path


@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_command_parses(doc, docs_cwd):
    checked, skipped, failed = [], [], []
    for no, line in command_lines((ROOT / doc).read_text(encoding="utf-8")):
        if PLACEHOLDER.search(line):
            skipped.append(no)
            continue
        args = shlex.split(line, comments=True)[1:]
        try:
            ctx = parse(args)
        except click.ClickException as e:
            failed.append(f"{doc}:{no}: {line}\n    -> {e.format_message()}")
        else:
            if ctx.command.name == "export-encoder":
                Path(ctx.params["out"]).mkdir(parents=True, exist_ok=True)
        checked.append(no)
    assert not failed, "documented commands the CLI rejects:\n" + "\n".join(failed)
    assert len(checked) >= 5 and len(checked) > len(skipped), (
        f"{doc}: only {len(checked)} command lines checked, {len(skipped)} skipped as placeholders "
        f"(lines {skipped}): write most examples as runnable commands")


def test_documented_manifest_info_runs_on_the_demo_manifest(tmp_path, monkeypatch):
    """The cheap lines run for real: `manifest info` on the manifest the demo writes (built here from a
    small synthetic set, no extraction), as the README's quickstart runs it after `make demo`."""
    from msa_cache.demo_data import make_synthetic_dataset
    from msa_cache.manifest.build import build_manifest

    data = make_synthetic_dataset(tmp_path / "demo-data" / "synthetic-demo", n=40)
    build_manifest("clmlf", root=data, output=tmp_path / "manifests" / "synthetic-demo.parquet")
    monkeypatch.chdir(tmp_path)
    ran = []
    for doc in DOCS:
        for no, line in command_lines((ROOT / doc).read_text(encoding="utf-8")):
            args = shlex.split(line, comments=True)[1:]
            if args[:2] == ["manifest", "info"] and Path(args[2]).is_file():
                r = CliRunner().invoke(cli, args)
                assert r.exit_code == 0, f"{doc}:{no}: {line}\n{r.output}"
                assert "synthetic-demo" in r.output and "train" in r.output
                ran.append(f"{doc}:{no}")
    assert ran, "no documented `manifest info` line reads the demo's manifest"


def test_a_misspelled_flag_fails(docs_cwd):
    """The check above would catch a typo: an unknown flag, a bad choice and a value out of range fail."""
    parse(["fit", "--manifest", "m.parquet", "--head", "late", "--max-epochs", "2"])
    for bad in (["fit", "--head", "late", "--max-epoch", "2"],
                ["fit", "--head", "no-such-head"],
                ["compare", "--heads", "late", "--monitor", "f1"],
                ["cache", "infos", "cache/x"]):
        with pytest.raises(click.UsageError):
            parse(bad)


def test_line_extraction_rules():
    text = "\n".join(["```bash", "msa-cache fit --head late \\", "    --seed 1   # one seed", "ls",
                      "```", "msa-cache outside --a-fence", "```", ".venv/bin/msa-cache cache info cache/x", "```"])
    assert command_lines(text) == [(2, "msa-cache fit --head late      --seed 1   # one seed"),
                                   (8, ".venv/bin/msa-cache cache info cache/x")]
    assert shlex.split(command_lines(text)[0][1], comments=True) == ["msa-cache", "fit", "--head", "late",
                                                                     "--seed", "1"]
    assert PLACEHOLDER.search("msa-cache predict <RUN> --text x")
    assert PLACEHOLDER.search("msa-cache fit --head ae-cat ...")
    assert not PLACEHOLDER.search("msa-cache fit --head ae-cat --manifest manifests/m.parquet")
