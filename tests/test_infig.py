"""INFIG head: GAM queue + EMA (once per optimizer step, own-row keys masked), HFAM top-j with padding,
align="stack"/"encoder" levels, ablations, CLIP input, padding invariance, learning."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from msa_cache.heads import Batch, ModalityInput, ModalitySpec, create_head
from msa_cache.heads.infig import Infig, row_keys, topj_similarity

D_T, D_I, L, P, D_CLIP = 12, 10, 8, 4, 6
TINY = dict(width=16, num_heads=2, stack_layers=2, fusion_layers=1, embed=8, queue_size=16, hfam_layers=2, hidden=16)


def make_spec(clip=False, frozen=()):
    spec = {"text": ModalitySpec(D_T, D_T, L), "image": ModalitySpec(D_I, D_I, P)}
    if clip:
        spec |= {"clip_text": ModalitySpec(D_CLIP), "clip_image": ModalitySpec(D_CLIP)}
    for name, d in frozen:
        spec[name] = ModalitySpec(d, d, L if name.startswith("text") else P)
    return spec


def make_batch(b=6, clip=False, seed=0, frozen=(), ids=None):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (b,), generator=g)
    lengths[0] = 1  # a text shorter than top_j
    mask = torch.arange(L)[None] < lengths[:, None]
    inputs = {
        "text": ModalityInput(torch.randn(b, D_T, generator=g), torch.randn(b, L, D_T, generator=g), mask),
        "image": ModalityInput(torch.randn(b, D_I, generator=g), torch.randn(b, P, D_I, generator=g)),
    }
    if clip:
        for m in ("clip_text", "clip_image"):
            inputs[m] = ModalityInput(F.normalize(torch.randn(b, D_CLIP, generator=g), dim=-1))
    for name, d in frozen:
        n = L if name.startswith("text") else P
        inputs[name] = ModalityInput(torch.randn(b, d, generator=g), torch.randn(b, n, d, generator=g),
                                     mask if name.startswith("text") else None)
    ids = [f"s{seed}-{i}" for i in range(b)] if ids is None else ids
    return Batch(inputs, torch.randint(0, 3, (b,), generator=g), {}, ids)


def make_head(clip_cache=False, frozen=(), **opts):
    torch.manual_seed(0)
    return create_head("infig", make_spec(clip_cache, frozen), 3, {**TINY, **opts})


def train_step(head, batch, opt):
    head.train()
    out = head(batch)
    total, terms = head.loss(out, batch)
    opt.zero_grad()
    total.backward()
    opt.step()
    head.optimizer_stepped()  # what both trainers do after every optimizer step
    return out, total, terms


def test_config_fields_have_help_and_registry():
    head = make_head()
    assert isinstance(head, Infig) and head.uses_tokens and head.optimizer == "adamw"
    for f in dataclasses.fields(Infig.Config):
        assert f.metadata.get("help"), f.name
    with pytest.raises(ValueError):
        create_head("infig", {"text": ModalitySpec(D_T, D_T, L)}, 3, TINY)


def test_ema_and_queue_update_once_per_optimizer_step():
    head = make_head(momentum=0.9)
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.1)
    out, _, terms = train_step(head, make_batch(b=6), opt)
    assert terms["gam"] == 0.0  # empty queue: no negatives yet, so no gradient into GAM
    assert int(head.queue_ptr) == 6 and int(head.queue_len) == 6

    with torch.no_grad():  # make the momentum copy differ from the online one, else the EMA check is vacuous
        for p in head.gam_proj_m.parameters():
            p.add_(torch.randn_like(p))
    moment = [p.detach().clone() for p in head.gam_proj_m.parameters()]
    out, _, terms = train_step(head, make_batch(b=6, seed=1), opt)
    assert terms["gam"] > 0  # now the queue gives negatives
    # The step's keys came from the momentum copy as it was (MoCo: EMA after a step, keys at the next forward)...
    k_i = F.normalize(torch.nn.functional.linear(out.aux["global_image"], moment[0], moment[1]), dim=-1)
    torch.testing.assert_close(out.aux["key_image"], k_i)
    # ...then EMA toward the online weights after the optimizer step, by exactly (1 - m).
    for m, o, new in zip(moment, head.gam_proj.parameters(), head.gam_proj_m.parameters()):
        torch.testing.assert_close(new, 0.9 * m + 0.1 * o.detach(), rtol=0, atol=1e-6)
    assert int(head.queue_ptr) == 12 and int(head.queue_len) == 12
    torch.testing.assert_close(head.queue_image[6:12], out.aux["key_image"])
    torch.testing.assert_close(head.queue_text[6:12], out.aux["key_text"])
    torch.testing.assert_close(head.queue_image[:12].norm(dim=1), torch.ones(12))
    assert head.queue_image[12:].abs().sum() == 0
    assert torch.equal(head.queue_ids[6:12], row_keys([f"s1-{i}" for i in range(6)])) and head.queue_has_id[:12].all()

    train_step(head, make_batch(b=6, seed=2), opt)
    assert int(head.queue_ptr) == 18 % 16 and int(head.queue_len) == 16  # wrapped around
    torch.testing.assert_close(head.queue_image[:2].norm(dim=1), torch.ones(2))

    head.eval()
    state = {k: v.clone() for k, v in head.state_dict().items()}
    with torch.no_grad():
        batch = make_batch(b=6, seed=3)
        _, terms = head.loss(head(batch), batch)
    assert terms["gam"] > 0
    for k, v in head.state_dict().items():
        assert torch.equal(v, state[k]), k


def brute_topj(a, a_mask, b, b_mask, j):
    out = torch.zeros(a.shape[0], b.shape[0])
    for p in range(a.shape[0]):
        for q in range(b.shape[0]):
            rows = []
            for x in a[p][a_mask[p]]:
                cos = sorted((F.cosine_similarity(x, y, dim=0).item() for y in b[q][b_mask[q]]), reverse=True)
                top = cos[:j]
                rows.append(sum(top) / len(top))
            out[p, q] = sum(rows) / len(rows)
    return out


def test_topj_ignores_padding_and_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 4, 5, generator=g)
    txt = torch.randn(3, 6, 5, generator=g)
    txt_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    img_mask = torch.ones(3, 4, dtype=torch.bool)
    # Bait: padding text tokens are copies of image tokens (cosine 1), so top-j would pick them if it could.
    txt[1, 3:] = img[0, :3]
    txt[2, 1:] = img[1, :5].repeat(2, 1)[:5]
    for j in (1, 2, 3):
        s_i2t = topj_similarity(img, img_mask, txt, txt_mask, j)
        torch.testing.assert_close(s_i2t, brute_topj(img, img_mask, txt, txt_mask, j), rtol=0, atol=1e-5)
        s_t2i = topj_similarity(txt, txt_mask, img, img_mask, j)
        torch.testing.assert_close(s_t2i, brute_topj(txt, txt_mask, img, img_mask, j), rtol=0, atol=1e-5)
    # Hand value: a text with one real token uses that one alone, even for j = 3.
    one = F.cosine_similarity(img[0], txt[2, 0].expand(4, -1), dim=-1).mean()
    torch.testing.assert_close(topj_similarity(img, img_mask, txt, txt_mask, 3)[0, 2], one)
    assert topj_similarity(img, img_mask, txt, txt_mask, 2).max() < 0.99  # no bait taken


@pytest.mark.parametrize("image_padding", [False, True])
def test_hfam_loss_is_the_in_batch_contrastive_loss_of_the_brute_force_similarities(image_padding):
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(3, 4, 5, generator=g), torch.randn(3, 6, 5, generator=g)
    img_mask = torch.ones(3, 4, dtype=torch.bool)
    if image_padding:  # both directions mask their columns (a cached layer with a mask, say)
        img_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    txt_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    head = make_head(top_j=2, hfam_tau=0.5)
    target = torch.arange(3)
    s_i2t, s_t2i = brute_topj(img, img_mask, txt, txt_mask, 2), brute_topj(txt, txt_mask, img, img_mask, 2)
    level = (F.cross_entropy(s_i2t / 0.5, target) + F.cross_entropy(s_t2i / 0.5, target)) / 2
    level2 = head._hfam([(img.flip(0), img_mask.flip(0))], [(txt.flip(0), txt_mask.flip(0))])  # a second level
    got = head._hfam([(img, img_mask), (img.flip(0), img_mask.flip(0))],
                     [(txt, txt_mask), (txt.flip(0), txt_mask.flip(0))])
    torch.testing.assert_close(got, (level + level2) / 2)
    torch.testing.assert_close(head._hfam([(img, img_mask)], [(txt, txt_mask)]), level, rtol=0, atol=1e-5)


def test_ablations_remove_terms_and_parameters():
    batch = make_batch()
    full = make_head()
    total, terms = full.loss(full(batch), batch)
    assert set(terms) == {"ce", "gam", "hfam"}
    torch.testing.assert_close(total.item(), terms["ce"] + 0.3 * terms["gam"] + 0.2 * terms["hfam"], rtol=1e-5, atol=1e-5)

    no_gam = make_head(gam=False)
    _, terms = no_gam.loss(no_gam(batch), batch)
    assert set(terms) == {"ce", "hfam"}
    assert not hasattr(no_gam, "gam_proj") and "queue_image" not in no_gam.state_dict()
    n_gam = sum(p.numel() for p in full.gam_proj.parameters()) * 2 + 1  # online + momentum + temperature
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in no_gam.parameters()) == n_gam

    no_hfam = make_head(hfam=False)
    out = no_hfam(batch)
    total, terms = no_hfam.loss(out, batch)
    assert set(terms) == {"ce", "gam"} and "loss_hfam" not in out.aux

    neither = make_head(gam=False, hfam=False)
    total, terms = neither.loss(neither(batch), batch)
    assert set(terms) == {"ce"} and total.item() == pytest.approx(terms["ce"])


def test_clip_features_enter_gam_only_when_enabled():
    batch = make_batch(clip=True)
    other = make_batch(clip=True, seed=1)
    swapped = Batch({**batch.inputs, "clip_image": other.inputs["clip_image"]}, batch.labels)

    with_clip = make_head(clip_cache=True)
    opt = torch.optim.SGD([p for p in with_clip.parameters() if p.requires_grad], lr=0.0)
    train_step(with_clip, make_batch(clip=True, seed=5), opt)  # fill the queue so L_g has negatives
    with_clip.eval()
    assert with_clip.gam_proj["image"].in_features == TINY["width"] + D_CLIP
    with torch.no_grad():
        a, b = with_clip(batch), with_clip(swapped)
    assert not torch.allclose(a.aux["loss_gam"], b.aux["loss_gam"])
    torch.testing.assert_close(a.logits, b.logits)  # CLIP shapes training through L_g, not the forward logits
    with pytest.raises(ValueError, match="clip"):
        with_clip(make_batch())

    no_clip = make_head(clip_cache=True, clip=False)
    train_step(no_clip, make_batch(clip=True, seed=5), opt)
    no_clip.eval()
    assert no_clip.gam_proj["image"].in_features == TINY["width"]
    with torch.no_grad():
        a, b = no_clip(batch), no_clip(swapped)
    torch.testing.assert_close(a.aux["loss_gam"], b.aux["loss_gam"])
    # A cache without CLIP = the paper's "w/o CLIP" even with the flag on.
    assert make_head(clip_cache=False).gam_proj["text"].in_features == TINY["width"]


def test_padding_garbage_changes_nothing_in_eval():
    head = make_head().eval()
    batch = make_batch()
    text = batch.inputs["text"]
    garbage = text.tokens.clone()
    garbage[~text.mask] = torch.randn(int((~text.mask).sum()), D_T) * 1e4
    garbage[0, -1] = float("nan")
    dirty = Batch({**batch.inputs, "text": ModalityInput(text.pooled, garbage, text.mask)}, batch.labels)
    with torch.no_grad():
        a, b = head(batch), head(dirty)
    torch.testing.assert_close(a.logits, b.logits)
    for k in ("loss_gam", "loss_hfam", "attn_image", "attn_text"):
        torch.testing.assert_close(a.aux[k], b.aux[k])
    assert a.aux["attn_text"][~text.mask].abs().sum() == 0
    g = torch.cat([a.aux["attn_image"], a.aux["attn_text"]], dim=1)
    torch.testing.assert_close(g.sum(1), torch.ones(g.shape[0]))
    assert a.aux["attn_image"].shape == (6, P) and a.aux["attn_text"].shape == (6, L)


def test_frozen_layers_join_the_hierarchy_when_m_exceeds_the_stack():
    frozen = (("text@-2", D_T), ("image@-2", 7))  # text shares the input projection; image needs its own
    head = make_head(frozen=frozen, stack_layers=1, hfam_layers=3)
    assert head.frozen_levels == [2] and list(head.level_proj) == ["image@-2"]
    batch = make_batch(frozen=frozen)
    total, terms = head.loss(head(batch), batch)
    total.backward()
    assert head.level_proj["image@-2"].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="hfam-layers"):
        make_head(stack_layers=1, hfam_layers=3)
    # With the default convention (M <= S + 1) cached layers are not needed.
    assert make_head(stack_layers=2, hfam_layers=3).frozen_levels == []


def test_align_encoder_aligns_the_encoders_own_layers():
    """align="encoder": text levels = cached layers -3, -2 (own projections) and -1 (the stack's input projection);
    a side without hidden layers (a CNN grid) keeps the stack's levels; GAM reads the encoder's last-layer CLS."""
    frozen = (("text@-2", D_T), ("text@-3", D_T))
    head = make_head(frozen=frozen, align="encoder", hfam_layers=3, stack_layers=2).eval()
    assert head.encoder_side == {"text": True, "image": False}
    assert sorted(head.level_proj) == ["text@-2", "text@-3"]
    batch = make_batch(frozen=frozen)
    seen = []
    orig = head._hfam
    head._hfam = lambda img, txt, *paired: seen.append((img, txt)) or orig(img, txt, *paired)
    with torch.no_grad():
        out = head(batch)
    (img_levels, txt_levels), = seen
    stack = head.stacks["text"]
    mask = batch.inputs["text"].mask
    for (got, got_mask), name in zip(txt_levels, ["text@-3", "text@-2", "text"]):
        tokens = batch.inputs[name].tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        proj = head.level_proj[name] if name != "text" else stack.proj
        torch.testing.assert_close(got, proj(tokens))
        assert torch.equal(got_mask, mask)
    assert len(img_levels) == 3 and img_levels[0][0].shape == (6, P, 16)  # image: stack input + its 2 layers
    with torch.no_grad():
        t_cls = stack.proj(batch.inputs["text"].tokens[:, 0])
    torch.testing.assert_close(out.aux["global_text"], t_cls)
    # training reaches the per-layer projections through L_f, and the shared input projection through L_g and L_f
    head.train()
    head.loss(head(batch), batch)[0].backward()
    assert head.level_proj["text@-3"].weight.grad.abs().sum() > 0 and stack.proj.weight.grad.abs().sum() > 0
    # an image side with hidden layers (a ViT extracted with --layers) aligns its own layers too
    vit = (("image@-2", D_I),)
    both = make_head(frozen=frozen[:1] + vit, align="encoder", hfam_layers=2)
    assert both.encoder_side == {"text": True, "image": True} and sorted(both.level_proj) == ["image@-2", "text@-2"]
    out = both(make_batch(frozen=frozen[:1] + vit))
    torch.testing.assert_close(out.aux["global_image"],
                               both.stacks["image"].proj(make_batch(frozen=frozen[:1] + vit).inputs["image"].pooled))
    with pytest.raises(ValueError, match="--layers -1,-2,-3"):
        make_head(frozen=frozen[:1], align="encoder", hfam_layers=3)
    with pytest.raises(ValueError, match="align must be"):
        make_head(align="top")
    # fine-tune mode asks the encoders for layers -2 .. -M
    assert Infig.encoder_layers({"align": "encoder", "hfam_layers": 3}) == (-2, -3)
    assert Infig.encoder_layers({"align": "stack", "hfam_layers": 3}) == ()
    assert Infig.encoder_layers({"align": "encoder", "hfam": False}) == ()


def synthetic(n, g):
    """Label = which of 3 prototypes is planted in one text token and one image patch (noisy, variable length)."""
    proto_t, proto_i = torch.randn(3, D_T, generator=torch.Generator().manual_seed(9)), torch.randn(
        3, D_I, generator=torch.Generator().manual_seed(10))
    y = torch.randint(0, 3, (n,), generator=g)
    lengths = torch.randint(2, L + 1, (n,), generator=g)
    mask = torch.arange(L)[None] < lengths[:, None]
    txt = torch.randn(n, L, D_T, generator=g)
    img = torch.randn(n, P, D_I, generator=g)
    rows = torch.arange(n)
    txt[rows, (torch.rand(n, generator=g) * lengths).long()] += 2 * proto_t[y]
    img[rows, torch.randint(0, P, (n,), generator=g)] += 2 * proto_i[y]
    inputs = {"text": ModalityInput(txt.mean(1), txt, mask), "image": ModalityInput(img.mean(1), img)}
    return Batch(inputs, y)




def test_accumulated_micro_batches_share_one_ema_and_one_enqueue():
    """Two training forwards before one optimizer step: one EMA update (m, not m^2), both batches' keys queued then."""
    head = make_head(momentum=0.9)
    with torch.no_grad():
        for p in head.gam_proj_m.parameters():
            p.add_(torch.randn_like(p))
    moment = [p.detach().clone() for p in head.gam_proj_m.parameters()]
    head.train()
    outs = []
    for seed in (1, 2):
        b = make_batch(b=4, seed=seed)
        out = head(b)
        head.loss(out, b)[0].backward()
        outs.append(out)
        assert int(head.queue_len) == 0  # nothing enqueued between micro-batches
        assert all(torch.equal(m, p) for m, p in zip(moment, head.gam_proj_m.parameters()))  # nor EMA
    torch.testing.assert_close(outs[0].aux["key_image"].norm(dim=1), torch.ones(4))
    head.optimizer_stepped()
    for m, o, new in zip(moment, head.gam_proj.parameters(), head.gam_proj_m.parameters()):
        torch.testing.assert_close(new, 0.9 * m + 0.1 * o.detach(), rtol=0, atol=1e-6)
    assert int(head.queue_len) == 8
    torch.testing.assert_close(head.queue_text[:8], torch.cat([o.aux["key_text"] for o in outs]))


def _gam_by_hand(head, out, ids):
    """L_g written out per row: negatives = filled queue slots whose id is not the row's own."""
    temp = head.gam_temp.clamp(0.001, 0.5)
    q_i = F.normalize(head.gam_proj["image"](out.aux["global_image"]), dim=-1)
    q_t = F.normalize(head.gam_proj["text"](out.aux["global_text"]), dim=-1)
    keys = row_keys(ids)
    losses = []
    for q, k, queue in ((q_i, out.aux["key_text"], head.queue_text), (q_t, out.aux["key_image"], head.queue_image)):
        total = 0.0
        for r in range(q.shape[0]):
            negs = [queue[j] for j in range(int(head.queue_len)) if int(head.queue_ids[j]) != int(keys[r])]
            logits = torch.stack([q[r] @ k[r]] + [q[r] @ n for n in negs]) / temp
            total = total - torch.log_softmax(logits, 0)[0]
        losses.append(total / q.shape[0])
    return (losses[0] + losses[1]) / 2


def test_queue_keys_of_the_same_row_are_not_negatives():
    head = make_head()
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.0)
    train_step(head, make_batch(b=6, seed=1, ids=list("abcdef")), opt)  # queue: keys of rows a..f
    head.eval()
    with torch.no_grad():
        same = make_batch(b=6, seed=1, ids=list("abcdef"))  # the same rows again (next epoch)
        out = head(same)
        expected = _gam_by_hand(head, out, same.ids)
        torch.testing.assert_close(out.aux["loss_gam"], expected)
        # each row's own older key sits in the queue; unmasked it would be a (very close) "negative"
        other = head(make_batch(b=6, seed=1, ids=list("uvwxyz")))
    assert out.aux["loss_gam"] < other.aux["loss_gam"]
    torch.testing.assert_close(other.aux["loss_gam"], _gam_by_hand(head, other, list("uvwxyz")))
    # a row whose only queued keys are its own has no negatives: its term is -log 1 = 0
    head2 = make_head()
    train_step(head2, make_batch(b=2, seed=1, ids=["a", "a"]), opt)
    head2.eval()
    with torch.no_grad():
        out = head2(make_batch(b=2, seed=1, ids=["a", "b"]))
    assert out.aux["loss_gam"].item() == pytest.approx(_gam_by_hand(head2, out, ["a", "b"]).item(), abs=1e-6)


def test_learns_a_small_synthetic_problem(one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    head = make_head(dropout=0.0)
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(150):
        _, _, terms = train_step(head, synthetic(32, g), opt)
        losses.append([terms["ce"], terms["gam"], terms["hfam"]])
    test = synthetic(300, g)
    head.eval()
    with torch.no_grad():
        acc = (head(test).logits.argmax(1) == test.labels).float().mean().item()
    first, last = (torch.tensor(losses[:10]).mean(0), torch.tensor(losses[-10:]).mean(0))
    assert last[0] < 0.5 * first[0], (first, last)  # cross-entropy
    # The alignments learn too (image and text share the class): below the chance levels
    # ln(queue + 1) for GAM's one positive among 16 queued negatives and ln(B) for HFAM's in-batch one.
    assert last[1] < 0.8 * math.log(16 + 1) and last[2] < 0.8 * math.log(32), (first, last)
    assert acc > 0.8, acc  # chance is 1/3


def test_logits_only_skips_alignment_losses_and_keeps_logits():
    # Predicting must not build HFAM's B*B*P*L cosines, nor touch the GAM queue.
    head = make_head()
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.0)
    train_step(head, make_batch(seed=5), opt)
    head.eval()
    batch = make_batch()
    queue_before = head.queue_image.clone(), int(head.queue_len)
    with torch.no_grad():
        full = head(batch)
        with head.logits_only():
            fast = head(batch)
    assert {"loss_gam", "loss_hfam"} <= set(full.aux) and not {"loss_gam", "loss_hfam"} & set(fast.aux)
    torch.testing.assert_close(full.logits, fast.logits)
    torch.testing.assert_close(full.aux["attn_image"], fast.aux["attn_image"])  # explain still works
    assert head.predicting is False  # the switch is scoped to the block
    torch.testing.assert_close(head.queue_image, queue_before[0])
    assert int(head.queue_len) == queue_before[1]
