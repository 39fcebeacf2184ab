"""Manifests from the released layouts as they are unpacked: TomBERT's Twitter-15/17 (absa_data/twitter2015,
absa_data/twitter and the IJCAI2019_data image folders; `--target-marker keep`), CLMLF's MVSA-Multiple
(dataset/data/MVSA-multiple/10-flod-1/), and skipped input lines listed under their reasons, refused unless
--allow-skips."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from msa_cache.manifest import read_manifest
from msa_cache.manifest.build import build_manifest
from msa_cache.manifest.builders.tmsc import dataset_year
from msa_cache.manifest.schema import ManifestError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TMSC = Path("/work/shared/data/twitter-tmsc") if not (SHARED / "twitter-tmsc").is_dir() else SHARED / "twitter-tmsc"
HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"


def _image(path: Path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), colour).save(path)


def tombert_download(base: Path) -> Path:
    """TomBERT's repository (absa_data/twitter = Twitter-17) beside the IJCAI2019_data image download."""
    root = base / "TomBERT" / "absa_data" / "twitter"
    root.mkdir(parents=True)
    rows = {"train": [(0, 2, "17_06_10389.jpg", "How $T$ is changing the influencer game :", "Jake Paul"),
                      (1, 1, "16_05_20_317.jpg", "rosters for the game in $T$ # NativePreps", "Oklahoma")],
            "dev": [(0, 0, "17_06_10389.jpg", "$T$ lost again", "Arsenal")],
            "test": [(0, 1, "16_05_20_317.jpg", "$T$ speaks", "Obama")]}
    for split, lines in rows.items():
        (root / f"{split}.tsv").write_text("\n".join([HEADER] + ["\t".join(map(str, r)) for r in lines]) + "\n")
    for name in ("17_06_10389.jpg", "16_05_20_317.jpg"):
        _image(base / "TomBERT" / "IJCAI2019_data" / "twitter2017_images" / name)
    return root


def test_tombert_layout_finds_the_image_release_and_names_the_year(tmp_path):
    root = tombert_download(tmp_path)
    summary = build_manifest("tmsc", root=root, output=tmp_path / "t.parquet")
    m = read_manifest(tmp_path / "t.parquet")
    assert m.meta.dataset == "twitter2017" and not summary.bad_rows and not summary.skipped
    assert m.column("image")[0] == "../../IJCAI2019_data/twitter2017_images/17_06_10389.jpg"
    assert m.column("text")[0] == "How Jake Paul is changing the influencer game :"  # restore: the default
    assert m.text_pairs()[0] == "Jake Paul"


def test_target_marker_keep_is_tomberts_own_input(tmp_path):
    root = tombert_download(tmp_path)
    build_manifest("tmsc", root=root, output=tmp_path / "k.parquet", target_marker="keep")
    m = read_manifest(tmp_path / "k.parquet")
    assert m.column("text")[0] == "How $T$ is changing the influencer game :" and m.text_pairs()[0] == "Jake Paul"
    assert m.meta.dataset == "twitter2017-marker"  # its caches and runs never mix with the restored text's
    with pytest.raises(ManifestError, match="--target-marker 'drop'"):
        build_manifest("tmsc", root=root, output=tmp_path / "x.parquet", target_marker="drop")
    from msa_cache_cli.manifest import manifest

    result = CliRunner().invoke(manifest, ["tmsc", "--root", str(root), "-o", str(tmp_path / "c.parquet"),
                                           "--target-marker", "keep"])
    assert result.exit_code == 0, result.output


def test_dataset_year():
    assert dataset_year(Path("absa_data/twitter2015"), []) == "2015"
    assert dataset_year(Path("absa_data/twitter"), ["1860693.jpg"]) == "2017"  # TomBERT's name for Twitter-17
    assert dataset_year(Path("t15"), ["1860693.jpg", "726.jpg"]) == "2015"
    assert dataset_year(Path("data"), ["17_06_10389.jpg"]) == "2017"
    assert dataset_year(Path("data"), ["a.jpg"]) is None


@pytest.mark.parametrize("year,sizes", [("2015", (3179, 1122, 1037)), ("2017", (3562, 1176, 1234))])
def test_real_tombert_files_in_the_release_layout(tmp_path, year, sizes):
    """The real split files, copied under TomBERT's folder names, with placeholder images in IJCAI2019_data."""
    src = TMSC / f"twitter{year}"
    if not src.is_dir():
        pytest.skip(f"{src} not here")
    root = tmp_path / "absa_data" / ("twitter2015" if year == "2015" else "twitter")
    root.mkdir(parents=True)
    ids = set()
    for split in ("train", "dev", "test"):
        data = (src / f"{split}.tsv").read_bytes()
        (root / f"{split}.tsv").write_bytes(data)
        ids |= {line.split(b"\t")[2].decode() for line in data.splitlines()[1:] if line.count(b"\t") == 4}
    images = tmp_path / "IJCAI2019_data" / f"twitter{year}_images"
    images.mkdir(parents=True)
    _image(images / "placeholder.jpg")
    for i in ids:
        (images / i).symlink_to(images / "placeholder.jpg")
    summary = build_manifest("tmsc", root=root, output=tmp_path / "m.parquet", workers=1)
    m = read_manifest(tmp_path / "m.parquet")
    assert m.meta.dataset == f"twitter{year}" and not summary.skipped and not summary.bad_rows
    assert [sum(1 for s in m.column("split") if s == x) for x in ("train", "dev", "test")] == list(sizes)


def write_clmlf_checkout(base: Path, fold_dirs=("10-flod-1",)) -> Path:
    """CLMLF's repository: dataset/data/MVSA-multiple/<fold>/{train,dev,test}.json and dataset_image/."""
    root = base / "CLMLF" / "dataset" / "data" / "MVSA-multiple"
    for fold in fold_dirs:
        for split, ids in (("train", [1, 2, 3]), ("dev", [4]), ("test", [5])):
            (root / fold).mkdir(parents=True, exist_ok=True)
            (root / fold / f"{split}.json").write_text(json.dumps(
                [{"id": i, "text": f"post {i}", "emotion_label": i % 3} for i in ids]))
    for i in range(1, 6):
        _image(root / "dataset_image" / f"{i}.jpg")
    return root


def test_clmlf_checkout_finds_its_fold_folder(tmp_path):
    root = write_clmlf_checkout(tmp_path)
    summary = build_manifest("clmlf", root=root, output=tmp_path / "m.parquet")
    m = read_manifest(tmp_path / "m.parquet")
    assert summary.n_rows == 5 and m.meta.builder_args.get("splits_dir") is None
    assert "split files from 10-flod-1" in summary.format()


def test_clmlf_several_folds_name_them(tmp_path):
    root = write_clmlf_checkout(tmp_path, ("10-flod-1", "10-flod-2"))
    build_manifest("clmlf", root=root, output=tmp_path / "m.parquet")  # the first fold, and it says so
    with pytest.raises(ManifestError, match="no train.json .*--splits-dir 10-flod-1"):
        build_manifest("clmlf", root=tmp_path, output=tmp_path / "x.parquet")


def write_skips(base: Path) -> Path:
    """A CLMLF split whose train.json has a bad label, an entry without an id, a labeled file's entry without
    a label, and a duplicate id; test.json has no labels at all (a withheld test split)."""
    root = base / "mvsa"
    (root / "splits").mkdir(parents=True)
    train = [{"id": "1", "text": "a", "emotion_label": 0}, {"id": "2", "text": "b", "emotion_label": 9},
             {"text": "no id", "emotion_label": 1}, {"id": "3", "text": "no label"},
             {"id": "1", "text": "again", "emotion_label": 2}, {"id": "6", "text": "f", "emotion_label": 1}]
    (root / "splits" / "train.json").write_text(json.dumps(train))
    (root / "splits" / "dev.json").write_text(json.dumps([{"id": "4", "text": "d", "emotion_label": 1}]))
    (root / "splits" / "test.json").write_text(json.dumps([{"id": "5", "text": "e"}]))
    for i in range(1, 7):
        _image(root / "data" / f"{i}.jpg")
    return root


def test_skipped_lines_are_listed_by_reason_and_refused_without_allow_skips(tmp_path):
    root = write_skips(tmp_path)
    out = tmp_path / "m.parquet"
    with pytest.raises(ManifestError, match=r"4 input line\(s\) cannot become rows \(missing id 1, bad label 1, "
                                            r"missing label 1, duplicate id 1; .*--allow-skips"):
        build_manifest("clmlf", root=root, output=out)
    assert not out.exists()  # nothing written
    summary = build_manifest("clmlf", root=root, output=out, allow_skips=True)
    text = summary.format()
    assert "skipped 4 input lines:" in text and "unreadable" not in text
    for reason in ("missing id (1):", "bad label (1):", "missing label (1):", "duplicate id (1):"):
        assert reason in text
    assert "train.json[3]: no label, while other entries of train.json have one" in text
    m = read_manifest(out)
    assert sorted(m.ids) == ["1", "4", "5", "6"]  # "3" without a label is not an unlabeled train row
    labels = dict(zip(m.ids, m.labels("label")))
    assert labels["5"] == -1  # the unlabeled test file stays unlabeled


def test_the_cli_exits_non_zero_on_skips_unless_allowed(tmp_path):
    from msa_cache_cli.main import main as cli

    root = write_skips(tmp_path)
    args = ["manifest", "clmlf", "--root", str(root), "-o", str(tmp_path / "m.parquet")]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0 and "--allow-skips" in refused.output and len(refused.output.strip().splitlines()) == 1
    allowed = CliRunner().invoke(cli, args + ["--allow-skips"])
    assert allowed.exit_code == 0 and "bad label (1):" in allowed.output
