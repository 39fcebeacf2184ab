"""The Python API (`msa_cache.finished_run` -> Predictor), runs from the Hugging Face Hub (snapshot_download
monkeypatched: no network) and batch predict from CSV / JSON-lines / Parquet files: each gives the run's
own probabilities, and bad input is a one-line error."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import msa_cache
from msa_cache.extract import extract
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run
from msa_cache.manifest import read_manifest
from msa_cache.study.share import export_run
from msa_cache_cli.main import main

from test_finetune import make_world

QUIET = {"shard_size": 16, "batch_size": 4, "workers": 0, "progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer):
    root, manifest, bert, vit = make_world(tmp_path_factory.mktemp("api"), tokenizer)
    extract(manifest, [str(bert), str(vit)], root / "cache", max_length=12, **QUIET)
    caches = {"text": str(root / "cache/toy/path-tiny-bert"), "image": str(root / "cache/toy/path-tiny-vit")}
    spec = RunSpec(str(manifest), caches, "ae-cat", {"latent": 8}, TrainConfig(max_epochs=2, batch_size=8), 0)
    return fit_run(spec, root / "runs", log=lambda m: None).path, read_manifest(manifest)


def _posts(man):
    texts = man.column("text")
    images = [str(man.image_path(p)) for p in man.column("image")]
    return texts, images


def _run_probs(path):
    table = pq.read_table(path / "predictions.parquet").to_pydict()
    return table["id"], np.array([table[k] for k in table if k.startswith("prob_")]).T


def test_load_predicts_the_runs_own_probabilities(run):
    path, man = run
    model = msa_cache.load(path, batch_size=3)  # batches of 3: several batches per call
    assert model.classes == man.classes and model.uses == {"text", "image"} and not model.text_pair
    texts, images = _posts(man)
    ids, want = _run_probs(path)
    ok = man.column("image_ok")  # a row marked unreadable has zero image features in the run; skip it here
    keep = [k for k, i in enumerate(ids) if ok[man.ids.index(i)]]
    ids, want = [ids[k] for k in keep], want[keep]
    order = [man.ids.index(i) for i in ids]
    probs = model.predict_proba([texts[r] for r in order], [images[r] for r in order])
    assert probs.shape == (len(order), len(man.classes))
    np.testing.assert_allclose(probs, want, atol=1e-5)
    assert model.predict([texts[order[0]]], [images[order[0]]]) == [man.classes[int(want[0].argmax())]]
    assert model.predict_proba([], []).shape == (0, len(man.classes))


def test_pil_images_and_data_frames(run):
    pd = pytest.importorskip("pandas")
    path, man = run
    model = msa_cache.load(path)
    texts, images = _posts(man)
    pil = [Image.open(p) for p in images[:4]]
    np.testing.assert_allclose(model.predict_proba(texts[:4], pil), model.predict_proba(texts[:4], images[:4]),
                               atol=1e-6)
    frame = pd.DataFrame({"tweet": texts[:4], "picture": images[:4], "other": range(4)})
    out = model.predict_frame(frame, text="tweet", image="picture")
    assert list(out.columns) == ["tweet", "picture", "other", "pred_class"] + [f"prob_{c}" for c in man.classes]
    np.testing.assert_allclose(out[[f"prob_{c}" for c in man.classes]].to_numpy(),
                               model.predict_proba(texts[:4], images[:4]), atol=1e-6)
    assert "pred_class" not in frame.columns  # a copy, the caller's frame untouched
    with pytest.raises(ValueError, match="no column 'text'"):
        model.predict_frame(frame)


@pytest.mark.parametrize("call, message", [
    (lambda m, t, i: m.predict_proba(t[:3], i[:2]), "one entry per post"),
    (lambda m, t, i: m.predict_proba(t[:3]), "uses a image encoder|uses an image encoder|pass images"),
    (lambda m, t, i: m.predict_proba(t[:2], [i[0], None]), "post 1: no image"),
    (lambda m, t, i: m.predict_proba(t[:2], i[:2], ["a", "b"]), "single texts"),
    (lambda m, t, i: m.predict_proba(t[:1], [12]), "a file path or a PIL image"),
    (lambda m, t, i: m.predict_proba(), "no posts"),
])
def test_bad_api_input_is_one_clear_error(run, call, message):
    path, man = run
    texts, images = _posts(man)
    with pytest.raises(ValueError, match=message):
        call(msa_cache.load(path), texts, images)


def test_hub_repo_ids_download_the_exported_run(run, tmp_path, monkeypatch):
    import huggingface_hub

    path, man = run
    exported = export_run(path, tmp_path / "exported", log=lambda m: None)
    calls = []

    def fake_snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, **kw):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(exported)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    texts, images = _posts(man)
    model = msa_cache.load("someone/msa-late", revision="v1")
    assert calls[0][:2] == ("someone/msa-late", "v1") and "model.safetensors" in calls[0][2]
    np.testing.assert_allclose(model.predict_proba(texts[:3], images[:3]),
                               msa_cache.load(path).predict_proba(texts[:3], images[:3]), atol=1e-6)

    result = CliRunner().invoke(main, ["predict", "someone/msa-late@v2", "--text", texts[0], "--image", images[0],
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert calls[-1][:2] == ("someone/msa-late", "v2")
    assert set(json.loads(result.stdout)["probs"]) == set(man.classes)


def test_hub_without_network_is_one_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(**kw):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    result = CliRunner().invoke(main, ["predict", "someone/msa-late", "--text", "hi", "--image", "x.jpg"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot download the run") and "(someone/msa-late)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(Exception, match="revision goes with a Hub repo id"):
        msa_cache.load(".", revision="v1")


def _write_inputs(folder, texts, images, fmt):
    """The same posts as CSV (tricky quoting, relative image paths), JSON lines or Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(images):
        Image.open(p).save(folder / f"img{i}.png")
    rel = [f"img{i}.png" for i in range(len(images))]
    ids = [f"00{i}" for i in range(len(texts))]
    if fmt == "csv":
        texts = [t + ', with a comma, "quotes"\nand a newline' for t in texts]
        quoted = ['"' + t.replace('"', '""') + '"' for t in texts]  # RFC 4180
        lines = ["id,text,image"] + [f"{i},{t},{r}" for i, t, r in zip(ids, quoted, rel)]
        (folder / "posts.csv").write_text("\n".join(lines) + "\n")
    elif fmt == "jsonl":
        (folder / "posts.jsonl").write_text("".join(json.dumps({"id": i, "text": t, "image": r}) + "\n"
                                                    for i, t, r in zip(ids, texts, rel)))
    else:
        pq.write_table(pa.table({"id": ids, "text": texts, "image": rel}), folder / "posts.parquet")
    return folder / f"posts.{fmt}", texts, [str(folder / r) for r in rel], ids


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_batch_predict_files(run, tmp_path, fmt):
    path, man = run
    texts, images = _posts(man)
    source, texts, local_images, ids = _write_inputs(tmp_path / fmt, texts[:6], images[:6], fmt)
    want = msa_cache.load(path).predict_proba(texts, local_images)
    out = tmp_path / f"preds.{'csv' if fmt != 'parquet' else 'parquet'}"
    result = CliRunner().invoke(main, ["predict", str(path), "--input", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote 6 predictions to {out}" in result.output
    if out.suffix == ".csv":
        header, *rows = out.read_text().splitlines()
        assert header == ",".join(['"row"', '"id"', '"pred_class"'] + [f'"prob_{c}"' for c in man.classes])
        got = np.array([[float(v) for v in r.split(",")[3:]] for r in rows])
        assert [r.split(",")[1].strip('"') for r in rows] == ids  # ids kept as written (00x, not numbers)
    else:
        table = pq.read_table(out).to_pydict()
        got = np.array([table[f"prob_{c}"] for c in man.classes]).T
        assert table["id"] == ids and table["row"] == list(range(6))
    np.testing.assert_allclose(got, want, atol=1e-5)

    lines = CliRunner().invoke(main, ["predict", str(path), "--input", str(source), "--json"]).stdout.splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["id"] for r in records] == ids
    np.testing.assert_allclose([[r["probs"][c] for c in man.classes] for r in records], want, atol=1e-5)


@pytest.mark.parametrize("content, args, message", [
    ("text,picture\nhi,a.png\n", [], "no column 'image' for the image"),
    ('{"text": "hi", "image": "a.png"}\nnot json\n', [], "line 2: not JSON"),
    ("text,image\nhi,a.png\n", ["-o", "preds.txt"], "write a .csv or .parquet"),
    ("text,image\nhi,a.png\n", ["--split", "dev"], "--split goes with --manifest"),
])
def test_batch_predict_bad_input(run, tmp_path, content, args, message):
    path, _ = run
    source = tmp_path / ("posts.jsonl" if content.startswith("{") else "posts.csv")
    source.write_text(content)
    result = CliRunner().invoke(main, ["predict", str(path), "--input", str(source), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "rror: " in result.stderr.strip().splitlines()[-1] and not (tmp_path / "preds.txt").exists()
