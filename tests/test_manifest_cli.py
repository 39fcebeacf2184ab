"""The `manifest` click group: build, info and one-line errors."""
import json
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from msa_cache_cli.manifest import manifest


def tiny_clmlf(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    items = {"train": [{"id": "1", "text": "yay", "emotion_label": 0}, {"id": "2", "text": "boo", "emotion_label": 2}],
             "dev": [{"id": "3", "text": "hm", "emotion_label": 1}],
             "test": [{"id": "4", "text": "?"}]}
    for split, rows in items.items():
        (root / f"{split}.json").write_text(json.dumps(rows))
    for i in range(1, 5):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "data" / f"{i}.jpg")
    (root / "data" / "4.jpg").write_bytes(b"\xff\xd8\xff")  # broken image: flagged, listed
    return root


def test_cli_build_then_info(tmp_path, monkeypatch):
    root = tiny_clmlf(tmp_path / "Tiny Set")
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)  # the default output folder manifests/ is relative to it
    result = runner.invoke(manifest, ["clmlf", "--root", str(root)])
    assert result.exit_code == 0, result.output
    out = Path("manifests/tiny-set.parquet")  # default output from the dataset name
    assert out.is_file()
    assert "4 rows" in result.output and "bad rows: 1" in result.output
    assert "test 4: image " in result.output

    info = runner.invoke(manifest, ["info", str(out)])
    assert info.exit_code == 0, info.output
    lines = info.output.splitlines()
    assert lines[1].split() == ["split", "positive", "neutral", "negative", "unlabeled", "total"]
    assert lines[2].split() == ["train", "1", "0", "1", "0", "2"]
    assert lines[3].split() == ["dev", "0", "1", "0", "0", "1"]
    assert lines[4].split() == ["test", "0", "0", "0", "1", "1"]

    dropped = runner.invoke(manifest, ["clmlf", "--root", str(root), "-o", "x.parquet", "--name", "t",
                                       "--drop-bad"])
    assert dropped.exit_code == 0 and "3 rows" in dropped.output and "dropped 1 bad rows" in dropped.output


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    absent = tmp_path / "nowhere"
    line = one_line_error(runner.invoke(manifest, ["clmlf", "--root", str(absent), "-o", str(tmp_path / "m.parquet")]))
    assert "nowhere: dataset root not found" in line

    root = tiny_clmlf(tmp_path / "d")
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where the output folder should be: not writable, even as root
    line = one_line_error(runner.invoke(manifest, ["clmlf", "--root", str(root), "-o", str(blocker / "m.parquet")]))
    assert "cannot create folder" in line and "pass -o" in line

    line = one_line_error(runner.invoke(manifest, ["mvsa", "--root", str(root), "-o", str(tmp_path / "m.parquet")]))
    assert "labelResultAll.txt: MVSA annotation file not found" in line

    line = one_line_error(runner.invoke(manifest, ["info", str(tmp_path / "missing.parquet")]))
    assert "no such manifest" in line
