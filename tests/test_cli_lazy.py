"""Start-up without the heavy libraries: the commands that need no model import no torch or
transformers (the CLI imports each command on use, the head and encoder catalogs list names and
options without model code), and a cache that `extract` will refuse is refused before any model loads."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest

HEAVY = ("torch", "transformers")
PROBE = """
import sys
from msa_cache_cli.main import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
except Exception as e:  # a refusal: its one line, then what was imported
    print("REFUSED", e)
print("HEAVY", *[m for m in {heavy!r} if m in sys.modules])
"""


def _heavy_after(args: list[str]) -> tuple[list[str], str]:
    """Run the CLI in a fresh interpreter; the heavy modules loaded at exit, and its stdout."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True,
                         text=True, timeout=300, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY")][-1]
    return line.split()[1:], out.stdout


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> tuple[Path, Path]:
    """A manifest and a tiny cache written by the extraction pipeline (a synthetic encoder)."""
    from msa_cache.encoders.synthetic import ArrayEncoder, random_rows
    from msa_cache.extract import extract

    root = tmp_path_factory.mktemp("lazy")
    rows = [{"id": f"p{i}", "text": f"post {i}", "image": f"img/{i}.jpg", "label": i % 3,
             "split": "train" if i < 20 else "dev"} for i in range(30)]
    meta = ManifestMeta(dataset="toy", classes=["positive", "neutral", "negative"], root=str(root), builder="test")
    manifest = write_manifest(rows_to_table(rows), meta, root / "manifests" / "toy.parquet")
    enc = ArrayEncoder("minilm", "text", {"text/cls": (4,)}, random_rows({"text/cls": (4,)}))
    extract(manifest, [enc], out=root / "cache", shard_size=16, batch_size=16, workers=0, progress=False,
            log=lambda m: None)
    return Path(manifest), root / "cache"


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["compare", "--help"], ["extract", "--help"],
                                  ["manifest", "--help"], ["finetune", "--help"], ["tune", "--help"],
                                  ["predict", "--help"], ["report", "--help"], ["export-encoder", "--help"],
                                  ["evaluate", "--help"]])
def test_help_imports_no_torch(args):
    heavy, _ = _heavy_after(args)
    assert heavy == []


def test_manifest_info_and_cache_info_import_no_torch(small_world):
    manifest, cache = small_world
    heavy, out = _heavy_after(["manifest", "info", str(manifest)])
    assert heavy == [] and "30" in out
    heavy, out = _heavy_after(["cache", "info", str(cache)])
    assert heavy == [] and "minilm" in out


def test_the_command_table_holds_each_commands_own_help():
    """`msa-cache --help` reads the short helps from COMMANDS: each must be its command's first paragraph."""
    from msa_cache_cli.main import COMMANDS, load_command

    for name, (_, short) in COMMANDS.items():
        cmd = load_command(name)
        assert cmd.name == name
        first = inspect.cleandoc(cmd.help or "").split("\n\n")[0]
        assert short == " ".join(first.split()), name


def test_head_and_encoder_catalogs_load_without_model_code():
    code = ("import sys; from msa_cache.heads import HEADS, default_heads, make_config; "
            "from msa_cache.encoders import ENCODERS, check_encoder_name; "
            "make_config('ae-cat', {'latent': 32}); check_encoder_name('minilm'); "
            "assert 'mha' in default_heads() and ENCODERS['minilm'].offline; "
            f"print([m for m in {HEAVY!r} + ('msa_cache.heads.base', 'msa_cache.encoders.base') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"


def _changed_manifest(manifest: Path, out: Path) -> Path:
    """The same manifest with one text changed: its caches are stale."""
    from msa_cache.manifest import read_manifest

    m = read_manifest(manifest)
    rows = [{"id": i, "text": t + (" changed" if i == "p0" else ""), "image": im, "label": int(y), "split": s}
            for i, t, im, y, s in zip(m.ids, m.column("text"), m.column("image"), m.labels("label"),
                                      m.column("split"))]
    return write_manifest(rows_to_table(rows), m.meta, out / "toy.parquet")


def test_extract_command_refuses_a_stale_cache_without_transformers(small_world, tmp_path):
    manifest, cache = small_world
    heavy, out = _heavy_after(["extract", "--manifest", str(_changed_manifest(manifest, tmp_path)),
                               "--encoder", "minilm", "--out", str(cache), "--shard-size", "16"])
    assert "REFUSED" in out and "manifest_fingerprint" in out
    assert "transformers" not in heavy


def test_extract_refuses_a_stale_cache_before_loading_the_model(small_world, tmp_path, monkeypatch):
    import msa_cache.extract.pipeline as pipeline
    from msa_cache.cache import CacheMismatchError

    manifest, cache = small_world
    changed = _changed_manifest(manifest, tmp_path)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(pipeline, "build_encoder", no_model)
    with pytest.raises(CacheMismatchError, match="manifest_fingerprint"):
        pipeline.extract(changed, ["minilm"], out=cache, shard_size=16, progress=False)
    with pytest.raises(CacheMismatchError, match="shard_size: 16 -> 8"):
        pipeline.extract(manifest, ["minilm"], out=cache, shard_size=8, progress=False)


def test_reading_finished_runs_imports_no_torch():
    """`report` and `compare --all-runs`'s reading side (leaderboards, statistics, figures, the oracle) load
    finished runs' files only: the trainer's modules, and torch, are imported where a run is trained."""
    probe = ("import sys\nimport msa_cache.report.build, msa_cache.report.collect, msa_cache.study.compare, "
             "msa_cache.study.oracle\nprint('HEAVY', *[m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["HEAVY"], out.stdout
