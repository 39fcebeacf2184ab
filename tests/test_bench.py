"""Smoke tests of bench/: the scripts import, parse their options and their cheap parts work.

The benchmarks themselves take minutes; they are run by hand (see bench/README.md).
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


@pytest.mark.parametrize("script", ["extract.py", "fit.py", "scale.py", "gpu_memory.py", "seeds.py", "epoch.py",
                                    "startup.py", "threads.py", "predict.py", "image_encoders.py"])
def test_help(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout


def test_table_and_machine():
    text = common.table(["a", "b"], [["x", 1234.5], ["y", 0.01234]])
    assert text.splitlines()[0] == "| a | b |" and "1,234" in text and "0.0123" in text
    m = common.machine()
    assert m["cores"] >= 1 and m["load"]
    assert common.peak_rss_mib() >= common.rss_mib() > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU message is only printed without CUDA")
def test_gpu_memory_without_cuda_exits_cleanly():
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_memory.py")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "needs a GPU" in proc.stdout


def test_child_measurement_reports_peak_rss():
    """One CPU stand-in measurement in its own subprocess (the small ae-cat head)."""
    if torch.cuda.is_available():
        pytest.skip("the CPU stand-in runs only without CUDA")
    r = common.run_child(BENCH / "gpu_memory.py", {"head": "ae-cat", "batch": 4, "step": "fit", "device": "cpu",
                                                   "threads": 1}, timeout=300)
    assert r["params"] > 0 and r["peak_rss_mib"] >= r["base_rss_mib"] > 0


def test_scale_manifest_and_sizes(tmp_path):
    import scale

    from msa_cache.manifest import read_manifest

    path = scale.make_manifest(tmp_path, 50, "tokens")
    m = read_manifest(path)
    assert len(m) == 50 and sorted(set(m.column("split"))) == ["dev", "test", "train"]
    assert scale.make_manifest(tmp_path, 50, "tokens") == path  # reused
    # MiniLM + EfficientNet-Lite0 token rows: ~220 KiB, so 50k rows are ~11 GB
    assert 215_000 < scale.bytes_per_row(scale.TOKEN_SHAPES) < 230_000
