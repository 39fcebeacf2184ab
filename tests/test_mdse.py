"""MDSE head: masks, the MACL loss against a direct loop, each ablation, and learning a toy problem."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from msa_cache.heads import Batch, ModalityInput, ModalitySpec, create_head, get_head
from msa_cache.heads.mdse import macl_loss, private_weights, shared_similarity

D_T, D_I, N, M, C = 12, 10, 6, 4, 3
SPEC = {"text": ModalitySpec(D_T, D_T, N), "image": ModalitySpec(D_I, D_I, M)}
TINY = {"width": 16, "num_heads": 4, "hidden": 16}


def make_batch(B=4, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([N, 3, 1, 4, 2, 5])[:B]
    mask = torch.arange(N)[None, :] < lengths[:, None]
    return Batch(
        {"text": ModalityInput(torch.randn(B, D_T, generator=g), torch.randn(B, N, D_T, generator=g), mask),
         "image": ModalityInput(torch.randn(B, D_I, generator=g), torch.randn(B, M, D_I, generator=g))},
        torch.tensor(labels if labels is not None else [0, 1, 2, 1][:B]),
        {"text": torch.tensor([0, -1, 1, 1][:B]), "image": torch.tensor([2, 1, -1, -1][:B])},
    )


def head(**opts):
    torch.manual_seed(0)
    return create_head("mdse", SPEC, C, {**TINY, **opts})


def test_config_flags_and_registry():
    cls = get_head("mdse")
    assert cls.uses_tokens and cls.optimizer == "adamw" and cls.modalities == ("text", "image")
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    assert all("help" in f.metadata for f in fields.values())
    # bool x=True -> --x/--no-x, so these names give --no-ipfl, --no-tpfl, --no-macl, --pfl-no-ada, --macl-unimodal
    assert {n: fields[n].default for n in ("ipfl", "tpfl", "macl", "pfl_no_ada", "macl_unimodal")} == {
        "ipfl": True, "tpfl": True, "macl": True, "pfl_no_ada": False, "macl_unimodal": False}
    with pytest.raises(ValueError, match="token features"):
        create_head("mdse", {"text": ModalitySpec(D_T), "image": ModalitySpec(D_I)}, C)
    with pytest.raises(ValueError, match="divisible"):
        create_head("mdse", SPEC, C, {"width": 10, "num_heads": 4})


def test_shapes_and_private_weights():
    h = head().eval()
    b = make_batch()
    out = h(b)
    assert out.logits.shape == (4, C)
    for k in ("shared", "emb_image", "emb_text", "emb_fused"):
        assert out.aux[k].shape == (4, 16)
    w_img, w_txt = out.aux["w_image"], out.aux["w_text"]
    assert w_img.shape == (4, M) and w_txt.shape == (4, N)
    mask = b.inputs["text"].mask
    assert torch.all(w_txt[~mask] == 0)
    # 1 - s with s a softmax over real tokens: the weights of a row sum to (#real - 1).
    torch.testing.assert_close(w_txt.sum(1), mask.sum(1).float() - 1)
    torch.testing.assert_close(w_img.sum(1), torch.full((4,), M - 1.0))
    assert torch.all((w_img >= 0) & (w_img <= 1))


def _streams(h, b):
    """Record what each co-attention layer was called with and returned."""
    seen = {}
    for name in ("co_image", "co_text"):
        getattr(h, name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({name: (i[0], i[1], i[2], o)}))
    return seen


def test_pairing_follows_eq_1_and_3():
    """f_v^s = CA(q=z, kv=v): a row per text token; S_image = v f_v^s^T is M x N, summed over real text tokens."""
    h = head().eval()
    b = make_batch()
    seen = _streams(h, b)
    with torch.no_grad():
        out = h(b)
        z = h.proj_text(b.inputs["text"].tokens)
        v = h.proj_image(b.inputs["image"].tokens)
    zm = b.inputs["text"].mask
    q, kv, kv_mask, fs_v = seen["co_image"]
    torch.testing.assert_close(q, z)  # queries: text tokens
    torch.testing.assert_close(kv, v)  # keys/values: image tokens
    assert kv_mask is None and fs_v.shape == (4, N, 16)
    q, kv, kv_mask, fs_z = seen["co_text"]
    torch.testing.assert_close(q, v)
    torch.testing.assert_close(kv, z)
    assert torch.equal(kv_mask, zm) and fs_z.shape == (4, M, 16)
    # the shared feature: mean over the real rows of [f_v^s; f_z^s] (padding text-query rows excluded)
    for i in range(4):
        rows = torch.cat([fs_v[i][zm[i]], fs_z[i]])
        torch.testing.assert_close(out.aux["shared"][i], rows.mean(0))
    # the private weights, written out per row as eqs. 2-3 read
    for i in range(4):
        n = int(zm[i].sum())
        S_img = v[i] @ fs_v[i][:n].T  # M x n
        assert S_img.shape == (M, n)
        torch.testing.assert_close(out.aux["w_image"][i], 1 - S_img.sum(1).softmax(0), rtol=1e-4, atol=1e-5)
        S_txt = z[i][:n] @ fs_z[i].T  # n x M
        torch.testing.assert_close(out.aux["w_text"][i][:n], 1 - S_txt.sum(1).softmax(0), rtol=1e-4, atol=1e-5)


def test_one_text_token_gives_one_similarity_column():
    b = make_batch()
    z = torch.randn(4, 1, 16)
    v = torch.randn(4, M, 16)
    h = head().eval()
    with torch.no_grad():
        fs_v = h.co_image(z, v, None)
        S = shared_similarity(v, fs_v)
    assert fs_v.shape == (4, 1, 16) and S.shape == (4, M, 1)
    torch.testing.assert_close(private_weights(S, None, None), 1 - S[..., 0].softmax(-1))
    # inside the head: a batch whose texts all have one real token
    mask = torch.zeros(4, N, dtype=torch.bool)
    mask[:, 0] = True
    b.inputs["text"].mask = mask
    seen = _streams(h, b)
    with torch.no_grad():
        out = h(b)
    fs_v_head = seen["co_image"][3]
    vp = h.proj_image(b.inputs["image"].tokens)
    S = shared_similarity(vp, fs_v_head)
    # only column 0 (the one real text token) counts in the image-side row sums
    torch.testing.assert_close(out.aux["w_image"], 1 - S[..., 0].softmax(-1))
    torch.testing.assert_close(out.aux["w_text"][:, 1:], torch.zeros(4, N - 1))


def test_private_weights_respect_both_masks():
    g = torch.Generator().manual_seed(3)
    S = torch.randn(2, 5, 4, generator=g)
    x_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    s_mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    w = private_weights(S, x_mask, s_mask)
    torch.testing.assert_close(w[0, :3], 1 - S[0, :3, :2].sum(1).softmax(0))
    assert torch.all(w[0, 3:] == 0)
    torch.testing.assert_close(w[1], 1 - S[1, :, 0].softmax(0))
    S2 = S.clone()
    S2[~s_mask[:, None, :].expand_as(S)] = 1e4  # garbage in masked-out shared columns
    S2[0, 3:] = -1e4  # and in padded x rows
    torch.testing.assert_close(private_weights(S2, x_mask, s_mask), w)


def test_image_values_reach_f_v_s_only_through_cross_attention():
    """CA(z, v, v): with the attention output zeroed, f_v^s no longer depends on the image tokens at all."""
    h = head().eval()
    b = make_batch()
    b2 = make_batch()
    b2.inputs["image"].tokens = b2.inputs["image"].tokens + 5 * torch.randn(4, M, D_I)
    seen = _streams(h, b)
    with torch.no_grad():
        h(b)
        a = seen["co_image"][3]
        h(b2)
        c = seen["co_image"][3]
    assert not torch.allclose(a, c)  # the image tokens do matter, through attention...
    h.co_image.attn.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    with torch.no_grad():
        h(b)
        a = seen["co_image"][3]
        h(b2)
        c = seen["co_image"][3]
    torch.testing.assert_close(a, c)  # ...and only there: no residual path from v


@pytest.mark.parametrize("opts", [{}, {"pfl_no_ada": True}, {"ipfl": False}])
def test_padding_garbage_changes_nothing(opts):
    h = head(**opts).eval()
    b = make_batch()
    mask = b.inputs["text"].mask
    t2 = b.inputs["text"].tokens.clone()
    t2[~mask] = 1e4 * torch.randn(int((~mask).sum()), D_T)  # loud garbage in padding slots
    b2 = Batch({"text": ModalityInput(b.inputs["text"].pooled, t2, mask), "image": b.inputs["image"]},
               b.labels, b.modality_labels)
    with torch.no_grad():
        o1, o2 = h(b), h(b2)
    torch.testing.assert_close(o1.logits, o2.logits)
    for k in o1.aux:
        torch.testing.assert_close(o1.aux[k], o2.aux[k])


def macl_loop(emb, labels, tau):
    """MACL written as the formula reads: a loop over anchors."""
    z = [e / e.norm() for e in emb.double()]
    terms = []
    for i in range(len(z)):
        if labels[i] < 0:
            continue
        num = den = 0.0
        has_pos = False
        for j in range(len(z)):
            if j == i or labels[j] < 0:
                continue
            e = math.exp(float(z[i] @ z[j]) / tau)
            den += e
            if labels[j] == labels[i]:
                num += e
                has_pos = True
        if has_pos:
            terms.append(-math.log(num / den))
    return sum(terms) / len(terms)


def test_macl_hand_example_with_negative_cosines():
    # a, b share a label but point opposite ways (cos = -1); c is orthogonal to both (cos = 0).
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    # anchors a and b: -log(e^-1 / (e^-1 + e^0)) = log(1 + e); c has no positive and is skipped.
    expected = math.log(1 + math.e)
    got = macl_loss(emb, labels, tau=1.0)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert macl_loop(emb, labels, 1.0) == pytest.approx(expected, rel=1e-12)


def test_macl_matches_loop_on_random_set():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(12, 5, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, -1, 2, 0, -1, 1, 2, 3])  # -1 rows left out, label 3 has no positive
    for tau in (0.07, 0.5):
        assert macl_loss(emb, labels, tau).item() == pytest.approx(macl_loop(emb, labels, tau), rel=1e-5)
    # no anchor with a positive -> 0, still differentiable
    e = emb.clone().requires_grad_()
    zero = macl_loss(e, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), 0.07)
    zero.backward()
    assert zero.item() == 0.0 and torch.all(e.grad == 0)


def test_macl_set_labels_and_loss_terms():
    h = head()
    b = make_batch()
    out = h(b)
    emb, labels = h.macl_set(out, b)
    assert emb.shape == (12, 16)
    # image labels where known else multimodal; text likewise; then multimodal
    assert labels.tolist() == [2, 1, 2, 1] + [0, 1, 1, 1] + [0, 1, 2, 1]
    total, terms = h.loss(out, b)
    assert set(terms) == {"ce", "macl"}
    assert total.item() == pytest.approx(terms["ce"] + h.cfg.lambda_macl * terms["macl"], rel=1e-5)
    # the contrastive term alone sends gradient into the encoder side
    h.zero_grad()
    macl_loss(emb, labels, 0.07).backward()
    assert h.co_image.attn.q.weight.grad.abs().sum() > 0


def test_unlabeled_rows_leave_the_contrastive_set():
    h = head()
    b = make_batch(labels=[0, -1, 2, 1])
    b.modality_labels = {}
    emb, labels = h.macl_set(h(b), b)
    assert (labels == -1).sum() == 3  # row 1 in each of the three blocks
    assert math.isfinite(h.loss(h(b), b)[0].item())


def test_no_macl_is_cross_entropy_only():
    h = head(macl=False)
    b = make_batch()
    out = h(b)
    total, terms = h.loss(out, b)
    assert set(terms) == {"ce"}
    torch.testing.assert_close(total, F.cross_entropy(out.logits, b.labels))


def test_macl_unimodal_uses_2b_rows():
    h = head(macl_unimodal=True)
    b = make_batch()
    emb, labels = h.macl_set(h(b), b)
    assert emb.shape == (8, 16) and labels.tolist() == [2, 1, 2, 1, 0, 1, 1, 1]


@pytest.mark.parametrize("side,flag", [("image", "ipfl"), ("text", "tpfl")])
def test_no_pfl_removes_that_sides_private_learning(side, flag):
    h = head(**{flag: False})
    other = "text" if side == "image" else "image"
    assert getattr(h, f"ada_{side}") is None and getattr(h, f"ada_{other}") is not None
    assert getattr(h, f"fuse_{side}")[0].in_features == 16  # f = FF(f^s), not FF([f^s, f^p])
    out = h(make_batch())
    assert f"w_{side}" not in out.aux and f"w_{other}" in out.aux
    # every parameter that exists is used
    h.loss(out, make_batch())[0].backward()
    assert all(p.grad is not None for p in h.parameters())
    assert sum(p.numel() for p in h.parameters()) < sum(p.numel() for p in head().parameters())


def test_pfl_no_ada_is_mean_of_reweighted_tokens():
    h = head(pfl_no_ada=True).eval()
    assert h.ada_image is None and h.ada_text is None
    b = make_batch()
    seen = {}
    h.fuse_image.register_forward_hook(lambda m, i, o: seen.update(img_in=i[0]))  # returns None: output kept
    with torch.no_grad():
        out = h(b)
        v = h.proj_image(b.inputs["image"].tokens)
    # f_v = FF([f^s, mean((1 - s) * v)])
    expected_fp = (out.aux["w_image"].unsqueeze(-1) * v).mean(1)
    torch.testing.assert_close(seen["img_in"], torch.cat([out.aux["shared"], expected_fp], -1))


def test_learns_a_synthetic_problem():
    """Class = a direction hidden in one random real text token plus a weaker one in one image patch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    protos_t, protos_i = torch.randn(C, D_T, generator=g), torch.randn(C, D_I, generator=g)

    def sample(B):
        y = torch.randint(0, C, (B,), generator=g)
        lengths = torch.randint(2, N + 1, (B,), generator=g)
        mask = torch.arange(N)[None, :] < lengths[:, None]
        t = torch.randn(B, N, D_T, generator=g)
        i = torch.randn(B, M, D_I, generator=g)
        pos_t = (torch.rand(B, generator=g) * lengths).long()
        pos_i = torch.randint(0, M, (B,), generator=g)
        t[torch.arange(B), pos_t] += 2.0 * protos_t[y]
        i[torch.arange(B), pos_i] += 1.0 * protos_i[y]
        return Batch({"text": ModalityInput(t.mean(1), t, mask), "image": ModalityInput(i.mean(1), i)}, y,
                     {"text": y.clone(), "image": y.clone()})

    h = create_head("mdse", SPEC, C, {"width": 32, "num_heads": 4, "hidden": 32, "dropout": 0.0})
    opt = torch.optim.AdamW(h.parameters(), lr=2e-3)
    test = sample(300)
    first, last = None, []
    for step in range(200):
        b = sample(32)
        loss, terms = h.loss(h(b), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        last.append(loss.item())
    h.eval()
    with torch.no_grad():
        acc = (h(test).logits.argmax(1) == test.labels).float().mean().item()
    assert sum(last[-20:]) / 20 < 0.5 * first
    print(f"first loss {first:.3f}, last-20 mean {sum(last[-20:]) / 20:.3f}, test acc {acc:.3f}")
    assert acc > 0.8, acc  # chance is 1/3


def test_runs_from_before_the_pairing_fix_are_not_reused():
    """The pairing changed the model for the same options: MDSE's revision enters the run identity (other heads keep theirs)."""
    from msa_cache.fit.config import RunSpec

    ident = RunSpec("m.parquet", {}, "mdse").identity("fp", {})
    assert ident["head_revision"] == get_head("mdse").revision >= 1
    assert "head_revision" not in RunSpec("m.parquet", {}, "late").identity("fp", {})
