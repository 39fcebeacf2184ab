"""Behaviour of the baseline and fusion heads on small synthetic problems (CPU, seconds).

The synthetic task: 3 classes; the class shows up as a prototype vector added to
ONE token at a random real position of one modality (text by default), on top of
N(0, 1) noise; the other modality is pure noise. Text has variable length with
padding (mask False, features 0); image patches are all real. Pooled features
are the masked mean of the tokens, so the signal is also there, diluted.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from msa_cache.heads import HEADS, Batch, ModalityInput, ModalitySpec, create_head, default_heads
from msa_cache.heads.autoencoder import parse_per_modality
from msa_cache.heads.base import masked_mean

C = 3
T_TEXT, D_TEXT = 10, 16
T_IMAGE, D_IMAGE = 6, 12
# The checks below loop over the head catalog, so a new head is checked without editing this file.
ALL = sorted(HEADS)
TOKEN_HEADS = [h for h in ALL if HEADS[h].uses_tokens]
POOLED_HEADS = [h for h in ALL if not HEADS[h].uses_tokens]
SMALL_HEADS = [h for h in ALL if HEADS[h].compute == "small"]  # large ones learn in test_mdse/test_infig
# Small widths so every test stays fast on two shared CPU cores: each head takes the ones it has.
SMALL_OPTIONS = {"hidden": 32, "latent": 16, "width": 32, "num_heads": 4, "layers": 1, "stack_layers": 1,
                 "fusion_layers": 1, "hfam_layers": 1, "embed": 16, "queue_size": 32}


def _small(name: str) -> dict:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(HEADS[name].Config)}
    return {k: v for k, v in SMALL_OPTIONS.items() if k in fields}


SMALL = {name: _small(name) for name in ALL}
DIMS = {"text": (T_TEXT, D_TEXT, True), "image": (T_IMAGE, D_IMAGE, False), "clip_text": (5, 8, True)}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def spec_for(mods) -> dict[str, ModalitySpec]:
    return {m: ModalitySpec(pooled_dim=DIMS[m][1], token_dim=DIMS[m][1], num_tokens=DIMS[m][0]) for m in mods}


def make_data(n: int, seed: int, signal_in: str = "text", mods=("text", "image"), num_classes: int = C) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    inputs = {}
    for m in mods:
        t, d, padded = DIMS[m]
        tokens = torch.randn(n, t, d, generator=g)
        lengths = torch.randint(3, t + 1, (n,), generator=g) if padded else torch.full((n,), t)
        mask = torch.arange(t)[None, :] < lengths[:, None]
        if m == signal_in:
            # Prototypes from a fixed generator so every split shares them.
            protos = 2.5 * torch.randn(num_classes, d, generator=torch.Generator().manual_seed(1234))
            pos = (torch.rand(n, generator=g) * lengths).long()
            tokens[torch.arange(n), pos] += protos[y]
        tokens = tokens * mask[..., None]
        inputs[m] = ModalityInput(masked_mean(tokens, mask), tokens, mask if padded else None)
    return Batch(inputs, y)


def subset(batch: Batch, idx: torch.Tensor) -> Batch:
    return Batch(
        {m: ModalityInput(x.pooled[idx], x.tokens[idx], None if x.mask is None else x.mask[idx])
         for m, x in batch.inputs.items()},
        batch.labels[idx],
    )


def train(head, data: Batch, steps: int = 200, lr: float = 3e-3, bs: int = 64, seed: int = 0):
    """Minimal SGD loop (Adam, minibatches); returns the per-step loss dicts."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    history = []
    for _ in range(steps):
        b = subset(data, torch.randint(0, data.size, (bs,), generator=g))
        loss, terms = head.loss(head(b), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"loss": float(loss.detach()), **terms})
    head.eval()
    return history


@torch.no_grad()
def accuracy(head, data: Batch) -> float:
    head.eval()
    return float((head(data).logits.argmax(-1) == data.labels).float().mean())


def np_inputs(batch: Batch) -> dict[str, np.ndarray]:
    return {m: x.pooled.numpy() for m, x in batch.inputs.items()}


def fit_probe(head, train_data: Batch, dev_data: Batch, **kw) -> dict:
    def acc(y_true, y_pred):
        return float((y_true == y_pred).mean())

    return head.fit_closed_form(np_inputs(train_data), train_data.labels.numpy(),
                                np_inputs(dev_data), dev_data.labels.numpy(), acc, **kw)


def test_catalog_traits():
    assert HEADS["ae-cat"].optimizer == HEADS["ab-add"].optimizer == "adam"
    assert {"ab-cat", "ab-add", "mha", "mdse", "infig"} <= set(TOKEN_HEADS)
    assert {"uni-text", "uni-image", "probe", "late", "ae-cat", "ae-add"} <= set(POOLED_HEADS)
    assert default_heads() == ["uni-text", "uni-image", "probe", "late", "ae-cat", "ae-add", "ab-cat", "ab-add", "mha"]


@pytest.mark.parametrize("name", ALL)
def test_model_reads_its_catalog_entry(name):
    """The entry's dotted path names a class decorated for that entry, whose traits are the entry's."""
    entry = HEADS[name]
    cls = entry.model_class()
    assert cls.name == name and cls.entry is entry and cls.Config is entry.Config
    assert (cls.uses_tokens, cls.optimizer, cls.fit_mode, cls.revision, cls.modalities) == (
        entry.uses_tokens, entry.optimizer, entry.fit_mode, entry.revision, entry.modalities)
    assert entry.fit_mode in ("gradient", "closed_form") and entry.optimizer in ("adam", "adamw")


@pytest.mark.parametrize("name", SMALL_HEADS)
def test_head_learns_synthetic_problem(name):
    signal = "image" if name == "uni-image" else "text"
    train_data, test_data = make_data(400, seed=0, signal_in=signal), make_data(200, seed=1, signal_in=signal)
    torch.manual_seed(0)
    head = create_head(name, spec_for(("text", "image")), C, SMALL[name])
    if getattr(head, "fit_mode", None) == "closed_form":
        fit_probe(head, train_data, make_data(200, seed=2, signal_in=signal))
    else:
        hist = train(head, train_data)
        # "ce" is the CE of the head's output for every head (late's training loss is a sum of CEs).
        first = np.mean([h["ce"] for h in hist[:10]])
        last = np.mean([h["ce"] for h in hist[-10:]])
        assert last < 0.5 * first, (first, last)
    assert accuracy(head, train_data) > 0.8
    assert accuracy(head, test_data) > 0.8  # chance is 1/3


@pytest.mark.parametrize("name", ALL)
def test_output_shapes_and_determinism(name):
    data = make_data(7, seed=3)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        head = create_head(name, spec_for(("text", "image")), C, SMALL[name]).eval()
        with torch.no_grad():
            outs.append(head(data).logits)
    assert outs[0].shape == (7, C)
    assert torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_padding_token_values_change_nothing(name):
    data = make_data(16, seed=4)
    assert (~data.inputs["text"].mask).any()
    torch.manual_seed(0)
    head = create_head(name, spec_for(("text", "image")), C, SMALL[name]).eval()
    garbage = make_data(16, seed=4)
    text = garbage.inputs["text"]
    noise = 100.0 * torch.randn(text.tokens.shape, generator=torch.Generator().manual_seed(5))
    text.tokens = torch.where(text.mask[..., None], text.tokens, noise)
    with torch.no_grad():
        clean, dirty = head(data).logits, head(garbage).logits
    assert not torch.equal(data.inputs["text"].tokens, text.tokens)
    torch.testing.assert_close(clean, dirty, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_token_heads_survive_an_all_padding_row(name):
    data = make_data(4, seed=3)
    data.inputs["text"].mask[0] = False  # no real text token at all: no NaN from 0/0 or softmax(-inf)
    torch.manual_seed(0)
    head = create_head(name, spec_for(("text", "image")), C, SMALL[name])
    loss, _ = head.loss(head(data), data)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_token_heads_fuse_three_modalities(name):
    mods = ("text", "image", "clip_text")
    torch.manual_seed(0)
    head = create_head(name, spec_for(mods), C, SMALL[name]).eval()
    out = head(make_data(5, seed=6, mods=mods))
    assert out.logits.shape == (5, C)
    if name.startswith("ab-"):
        assert len(out.aux["attn"]) == 6  # all ordered pairs of 3 modalities


@pytest.mark.parametrize("name", ["ab-cat", "ab-add"])
def test_attention_block_weights_are_real_attention(name):
    data = make_data(8, seed=7)
    torch.manual_seed(0)
    head = create_head(name, spec_for(("text", "image")), C, SMALL[name]).eval()
    with torch.no_grad():
        attn = head(data).aux["attn"]
    tmask = data.inputs["text"].mask
    img_reads_text = attn[("image", "text")]  # [B, T_image, T_text]
    text_reads_img = attn[("text", "image")]  # [B, T_text, T_image]
    assert img_reads_text.shape == (8, T_IMAGE, T_TEXT) and text_reads_img.shape == (8, T_TEXT, T_IMAGE)
    # Rows are distributions over the real keys only; padding keys get exactly zero.
    torch.testing.assert_close(img_reads_text.sum(-1), torch.ones(8, T_IMAGE))
    assert (img_reads_text.masked_select(~tmask[:, None, :].expand_as(img_reads_text)) == 0).all()
    real_rows = text_reads_img.sum(-1)
    torch.testing.assert_close(real_rows[tmask], torch.ones(int(tmask.sum())))
    assert (real_rows[~tmask] == 0).all()  # padded queries are zeroed in the map
    # Not the degenerate single-key softmax of the seed: weights are spread, none is 1.
    assert img_reads_text.max() < 0.99 and text_reads_img.max() < 0.99
    assert (img_reads_text[tmask[:, None, :].expand_as(img_reads_text)] > 0).all()


@pytest.mark.parametrize("name", ALL)
def test_explain_weights_where_the_catalog_says_so(name):
    """Heads whose entry says what their explain weights mean return [B, P] image and [B, L] text weights
    (or None for a side they lack); the others refuse."""
    data = make_data(3, seed=18)
    torch.manual_seed(0)
    head = create_head(name, spec_for(("text", "image")), C, SMALL[name]).eval()
    with torch.no_grad(), head.logits_only():
        out = head(data)
    if not HEADS[name].explains:
        with pytest.raises(ValueError, match="cannot be explained"):
            head.explain_weights(out.aux, data.inputs["text"].mask)
        return
    image, text = head.explain_weights(out.aux, data.inputs["text"].mask)
    assert image is not None or text is not None
    assert image is None or image.shape == (3, T_IMAGE)
    assert text is None or text.shape == (3, T_TEXT)


def test_attention_block_needs_two_modalities():
    with pytest.raises(ValueError, match="at least two"):
        create_head("ab-cat", spec_for(("text",)), C)


@pytest.mark.parametrize("name", ["ae-cat", "ae-add"])
def test_autoencoder_three_modalities_reconstruction_falls(name):
    mods = ("text", "image", "clip_text")
    data = make_data(300, seed=8, mods=mods)
    torch.manual_seed(0)
    head = create_head(name, spec_for(mods), C, {**SMALL[name], "lambda_rec_per": "clip_text=2"})
    assert head.lambda_rec == {"clip_text": 2.0, "image": 1.0, "text": 1.0}
    out = head(data)
    assert set(out.aux["recon"]) == set(mods)
    assert out.aux["recon"]["image"].shape == (300, D_IMAGE) and out.aux["z"].shape == (300, 16)
    hist = train(head, data, steps=150)
    for m in mods:
        start = np.mean([h[f"rec_{m}"] for h in hist[:5]])
        end = np.mean([h[f"rec_{m}"] for h in hist[-5:]])
        assert end < 0.8 * start, (m, start, end)
    assert accuracy(head, data) > 0.8


def test_autoencoder_loss_is_weighted_sum():
    mods = ("text", "image")
    data = make_data(20, seed=9, mods=mods)
    torch.manual_seed(0)
    head = create_head("ae-cat", spec_for(mods), C,
                       {"latent": 8, "lambda_ce": 0.5, "lambda_rec": 2.0, "lambda_rec_per": "image=0.25"}).eval()
    loss, terms = head.loss(head(data), data)
    expected = 0.5 * terms["ce"] + 2.0 * terms["rec_text"] + 0.25 * terms["rec_image"]
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)


def test_parse_per_modality_rejects_bad_input():
    assert parse_per_modality(" text=1, image=0.5 ", ["image", "text"], 3.0) == {"text": 1.0, "image": 0.5}
    assert parse_per_modality("", ["image", "text"], 3.0) == {"image": 3.0, "text": 3.0}
    with pytest.raises(ValueError, match="audio"):
        parse_per_modality("audio=1", ["image", "text"], 1.0)
    with pytest.raises(ValueError, match="not a number"):
        parse_per_modality("text=high", ["image", "text"], 1.0)
    with pytest.raises(ValueError):
        create_head("ae-add", spec_for(("text", "image")), C, {"lambda_rec_per": "text:1"})


def test_late_fusion_averages_probabilities_and_sums_ces():
    data = make_data(12, seed=10)
    torch.manual_seed(0)
    head = create_head("late", spec_for(("text", "image")), C, SMALL["late"]).eval()
    out = head(data)
    per = out.aux["logits"]
    avg = (per["text"].softmax(-1) + per["image"].softmax(-1)) / 2
    torch.testing.assert_close(out.logits.softmax(-1), avg)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(12))  # logits are log-probabilities
    loss, terms = head.loss(out, data)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss, ce(per["text"], data.labels) + ce(per["image"], data.labels))
    assert set(terms) == {"ce", "ce_text", "ce_image"}


def test_uni_heads_ignore_the_other_modality():
    data = make_data(6, seed=11)
    other = make_data(6, seed=12)
    for name, mod in [("uni-text", "text"), ("uni-image", "image")]:
        torch.manual_seed(0)
        head = create_head(name, spec_for(("text", "image")), C).eval()
        mixed = Batch({mod: data.inputs[mod], **{m: x for m, x in other.inputs.items() if m != mod}}, data.labels)
        torch.testing.assert_close(head(data).logits, head(mixed).logits)
    with pytest.raises(ValueError, match="needs modalities"):
        create_head("uni-image", spec_for(("text",)), C)


def _standardised(head, batch: Batch) -> np.ndarray:
    x = np.concatenate([batch.inputs[m].pooled.numpy() for m in head.mods], axis=1).astype(np.float64)
    return (x - head.mean.numpy()) / head.std.numpy()


def test_probe_matches_sklearn_and_picks_c_on_dev():
    from sklearn.linear_model import LogisticRegression

    train_data, dev_data, test_data = make_data(300, seed=13), make_data(150, seed=14), make_data(100, seed=15)
    head = create_head("probe", spec_for(("text", "image")), C)
    result = fit_probe(head, train_data, dev_data)
    scores = result["dev_scores"]
    assert sorted(scores) == [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    best = max(scores.values())
    assert result["C"] == min(c for c, s in scores.items() if s == best)  # ties -> stronger penalty
    with torch.no_grad():
        assert accuracy(head, dev_data) == pytest.approx(scores[result["C"]])
        logits = head(test_data).logits.double().numpy()
    clf = LogisticRegression(C=result["C"], max_iter=1000).fit(_standardised(head, train_data), train_data.labels.numpy())
    np.testing.assert_allclose(logits, clf.decision_function(_standardised(head, test_data)), atol=1e-4, rtol=1e-4)
    # The selection follows monitor_fn: a monitor that likes only the third C it sees gets that C.
    calls = []

    def likes_third(y_true, y_pred):
        calls.append(1)
        return 1.0 if len(calls) == 3 else 0.0

    out = head.fit_closed_form(np_inputs(train_data), train_data.labels.numpy(), np_inputs(dev_data),
                               dev_data.labels.numpy(), likes_third)
    assert out["C"] == 1e-1


def test_probe_binary_and_class_weight():
    from sklearn.linear_model import LogisticRegression

    train_data, dev_data = make_data(200, seed=16, num_classes=2), make_data(100, seed=17, num_classes=2)
    train_data.labels[:10] = -1  # unlabeled rows are ignored
    head = create_head("probe", spec_for(("text", "image")), 2, {"c_grid": "0.1,1"})
    result = fit_probe(head, train_data, dev_data, class_weight=torch.tensor([1.0, 2.0]))
    assert set(result["dev_scores"]) == {0.1, 1.0}
    keep = train_data.labels >= 0
    clf = LogisticRegression(C=result["C"], max_iter=1000, class_weight={0: 1.0, 1: 2.0}).fit(
        _standardised(head, train_data)[keep.numpy()], train_data.labels[keep].numpy())
    with torch.no_grad():
        logits = head(dev_data).logits.double()
    x = _standardised(head, dev_data)
    np.testing.assert_allclose((logits[:, 1] - logits[:, 0]).numpy(), clf.decision_function(x), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits.softmax(-1).numpy(), clf.predict_proba(x), atol=1e-5)


def test_create_head_rejects_unknown_options():
    spec = spec_for(("text", "image"))
    with pytest.raises(ValueError, match=r"head 'ae-cat' has no option\(s\) \['latnet'\]"):
        create_head("ae-cat", spec, C, {"latnet": 32})
    with pytest.raises(ValueError, match="unknown head 'ae-mul'"):
        create_head("ae-mul", spec, C)
    with pytest.raises(ValueError, match="not divisible"):
        create_head("mha", spec, C, {"width": 30, "num_heads": 4})
    with pytest.raises(ValueError, match="c_grid"):
        create_head("probe", spec, C, {"c_grid": "small"})
    no_tokens = {"text": ModalitySpec(D_TEXT), "image": ModalitySpec(D_IMAGE)}
    with pytest.raises(ValueError, match="token features"):
        create_head("mha", no_tokens, C)


def test_every_option_has_help():
    import dataclasses

    for name in ALL:
        for f in dataclasses.fields(HEADS[name].Config):
            assert f.metadata.get("help"), (name, f.name)


def test_mha_grid_pos_makes_cnn_grids_ordered():
    """Without --grid-pos a CNN grid is a bag of cells (permuting them changes nothing); with it the
    head sees where each cell is. Only image modalities on a square grid get the embedding."""
    spec = {"text": ModalitySpec(D_TEXT, D_TEXT, T_TEXT), "image": ModalitySpec(D_IMAGE, D_IMAGE, 9)}
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 9, D_IMAGE, generator=g)
    text = torch.randn(2, T_TEXT, D_TEXT, generator=g)
    perm = torch.randperm(9, generator=g)

    def logits(head, image_tokens):
        batch = Batch({"text": ModalityInput(text.mean(1), text, torch.ones(2, T_TEXT, dtype=torch.bool)),
                       "image": ModalityInput(image_tokens.mean(1), image_tokens, None)}, torch.tensor([0, 1]))
        return head.eval()(batch).logits

    for grid_pos, same in ((False, True), (True, False)):
        torch.manual_seed(0)
        head = create_head("mha", spec, C, {**SMALL["mha"], "grid_pos": grid_pos})
        assert torch.allclose(logits(head, tokens), logits(head, tokens[:, perm]), atol=1e-5) is same
    assert set(head.grid) == {"image"} and head.grid_rows["image"].shape == (3, 32)
    with pytest.raises(ValueError, match="no image modality with a square token grid"):
        create_head("mha", spec_for(("text", "image")), C, {**SMALL["mha"], "grid_pos": True})  # 6 patches
