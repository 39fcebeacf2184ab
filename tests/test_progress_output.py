"""Progress in logs: off a terminal, `extract` prints a line now and then instead of a bar's carriage
returns, and transformers' own "Loading weights" bar is silenced (also under --no-progress)."""
from click.testing import CliRunner

from msa_cache.extract.pipeline import ProgressLines
from msa_cache_cli.main import main

from test_finetune import make_world


def test_progress_lines_every_interval_with_rate_and_time_left():
    now = [0.0]
    lines = []
    bar = ProgressLines("minilm", 1000, lines.append, every=30.0, clock=lambda: now[0])
    for _ in range(9):  # 100 rows every 10 s
        now[0] += 10.0
        bar.update(100)
    assert lines == ["minilm: 300/1,000 rows, 10.0 rows/s, about 1m10s left",
                     "minilm: 600/1,000 rows, 10.0 rows/s, about 40s left",
                     "minilm: 900/1,000 rows, 10.0 rows/s, about 10s left"]
    quiet = ProgressLines("minilm", 1000, None, every=0.0, clock=lambda: now[0])
    quiet.update(10)  # --no-progress: nothing, and nothing to call


def test_extract_in_a_log_has_no_bars(tmp_path, tokenizer):
    root, manifest, bert, vit = make_world(tmp_path, tokenizer)
    for extra in ([], ["--no-progress"]):
        out = tmp_path / f"cache{len(extra)}"
        r = CliRunner().invoke(main, ["extract", "--manifest", str(manifest), "--encoder", str(bert), "--encoder",
                                      str(vit), "--out", str(out), "--max-length", "12", *extra])
        assert r.exit_code == 0, r.output
        assert "\r" not in r.output and "Loading weights" not in r.output, r.output
        assert "complete" in r.output
