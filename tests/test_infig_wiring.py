"""INFIG against the paper's wiring: GAM aligns the visual [CLS] where the image encoder has one (the
field chooser gives image/cls; the patch/grid mean where there is none) and a run records which; stack
depth 0 lets the fusion read the encoders' own last layer, the fine-tune default."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from msa_cache.cache.fields import head_fields, recorded_image_pool
from msa_cache.encoders.synthetic import ArrayEncoder, random_rows
from msa_cache.extract import extract
from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run
from msa_cache.heads import Batch, ModalityInput, ModalitySpec, create_head, get_head
from msa_cache.heads.infig import Infig
from msa_cache.manifest import ManifestMeta, rows_to_table, write_manifest

TINY = dict(width=16, num_heads=2, fusion_layers=1, embed=8, queue_size=16, hfam_layers=2, hidden=16)
VIT_FIELDS = {"image/cls": (10,), "image/pooled": (10,), "image/tokens": (4, 10), "image/hidden/-2": (4, 10)}


def test_the_field_chooser_gives_the_visual_cls_only_to_heads_that_ask():
    vit, cnn = list(VIT_FIELDS), ["image/pooled", "image/tokens"]
    assert head_fields("image", vit)["image"][0] == "image/pooled"  # every other head: unchanged
    assert head_fields("image", vit, image_pool="cls")["image"][0] == "image/cls"
    assert head_fields("image", cnn, image_pool="cls")["image"][0] == "image/pooled"  # no CLS: the mean
    assert head_fields("image", vit, image_pool="cls")["image@-2"][0] == "image/cls"
    with pytest.raises(ValueError, match="image pool"):
        head_fields("image", vit, image_pool="max")
    assert Infig.image_pool({"align": "encoder"}) == "cls"
    assert Infig.image_pool({"align": "stack"}) == Infig.image_pool({}) == "pooled"  # stack: reads no image vector
    assert Infig.image_pool({"align": "encoder", "gam": False}) == "pooled"
    # the field chooser asks the catalog entry before any model is built (no torch import needed)
    assert get_head("infig").image_pool({"align": "encoder"}) == "cls"
    assert get_head("infig").image_pool({"align": "stack"}) == get_head("late").image_pool({}) == "pooled"
    assert get_head("infig").finetune_defaults == {"align": "encoder", "stack_layers": 0}
    assert get_head("infig").Config.__dataclass_fields__["stack_layers"].metadata["min"] == 0
    assert recorded_image_pool({"fields": {"image": {"pooled": "image/cls"}}}) == "cls"
    assert recorded_image_pool({"caches": {"image": {"fields": ["image/pooled", "image/tokens"]}}}) == "pooled"
    assert recorded_image_pool({}) == "pooled"  # runs made before the choice existed read the mean


def _spec(image_hidden=True):
    spec = {"text": ModalitySpec(12, 12, 6), "text@-2": ModalitySpec(12, 12, 6), "image": ModalitySpec(10, 10, 4)}
    if image_hidden:
        spec["image@-2"] = ModalitySpec(10, 10, 4)
    return spec


def _batch(spec, b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(6)[None] < torch.randint(2, 7, (b,), generator=g)[:, None]
    inputs = {m: ModalityInput(torch.randn(b, s.pooled_dim, generator=g),
                               torch.randn(b, s.num_tokens, s.token_dim, generator=g),
                               mask if m.startswith("text") else None) for m, s in spec.items()}
    return Batch(inputs, torch.randint(0, 3, (b,), generator=g), {}, [f"r{i}" for i in range(b)])


def test_stack_depth_zero_feeds_the_encoders_last_layer_to_the_fusion():
    spec = _spec()
    torch.manual_seed(0)
    head = create_head("infig", spec, 3, {**TINY, "align": "encoder", "stack_layers": 0}).eval()
    assert all(len(s.layers) == 0 and not hasattr(s, "cls") for s in head.stacks.values())
    batch = _batch(spec)
    seen = []
    first = head.fusion[0]
    first.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(args[0]), with_kwargs=True)
    with torch.no_grad():
        out = head(batch)
        img = head.stacks["image"].proj(batch.inputs["image"].tokens) + head.type_emb[0]
        txt_tokens = batch.inputs["text"].tokens.masked_fill(~batch.inputs["text"].mask.unsqueeze(-1), 0.0)
        txt = head.stacks["text"].proj(txt_tokens) + head.type_emb[1]
    torch.testing.assert_close(seen[0], torch.cat([img, txt], dim=1))
    # GAM aligns the encoders' own vectors: the text CLS (token 0) and the image vector the chooser gave
    with torch.no_grad():
        torch.testing.assert_close(out.aux["global_image"], head.stacks["image"].proj(batch.inputs["image"].pooled))
        torch.testing.assert_close(out.aux["global_text"], head.stacks["text"].proj(txt_tokens[:, 0]))
    head.train()
    head.loss(head(batch), batch)[0].backward()
    assert head.stacks["text"].proj.weight.grad.abs().sum() > 0
    assert head.run_record({"image": {"pooled": "image/cls"}}) == {"gam_image": "image/cls: the image encoder's [CLS]"}


def test_stack_depth_zero_limits():
    with pytest.raises(ValueError, match="align=stack"):
        create_head("infig", _spec(), 3, {**TINY, "align": "stack", "stack_layers": 0})
    # a CNN side has no layers of its own to align: it needs a stack over its grid (the paper's ResNet-50 has one)
    with pytest.raises(ValueError, match="--stack-layers 1"):
        create_head("infig", _spec(image_hidden=False), 3, {**TINY, "align": "encoder", "stack_layers": 0})
    cnn = create_head("infig", _spec(image_hidden=False), 3,
                      {**TINY, "align": "encoder", "stack_layers": 0, "hfam_layers": 1}).eval()
    batch = _batch(_spec(image_hidden=False))
    with torch.no_grad():  # GAM: the mean of the grid (image/pooled) through the projection
        torch.testing.assert_close(cnn(batch).aux["global_image"], cnn.stacks["image"].proj(batch.inputs["image"].pooled))
    assert cnn.run_record({"image": {"pooled": "image/pooled"}}) == {
        "gam_image": "image/pooled: the mean of the image encoder's tokens (it has no [CLS])"}
    stacked = create_head("infig", _spec(), 3, {**TINY, "stack_layers": 1})
    assert stacked.run_record({"image": {"pooled": "image/pooled"}}) == {"gam_image": "the image stack's CLS at layer -1"}
    assert Infig.finetune_defaults == {"align": "encoder", "stack_layers": 0}


@pytest.fixture(scope="module")
def vit_cache(tmp_path_factory):
    """A manifest and caches whose image side is a ViT-like cache: image/cls apart from the patch mean."""
    root = tmp_path_factory.mktemp("infig-cls")
    (root / "img").mkdir()
    rows = []
    for i in range(30):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(root / "img" / f"{i}.jpg")
        rows.append({"id": str(i), "text": f"post {i}", "image": f"img/{i}.jpg", "label": i % 3,
                     "split": "train" if i < 20 else "dev"})
    meta = ManifestMeta(dataset="vitw", classes=["a", "b", "c"], root=str(root), builder="test")
    manifest = write_manifest(rows_to_table(rows), meta, root / "vitw.parquet")
    tshapes = {"text/cls": (12,), "text/tokens": (6, 12), "text/mask": (6,), "text/hidden/-2": (6, 12)}
    text = ArrayEncoder("t", "text", tshapes, random_rows(tshapes, 1, (2, 6)))
    image = ArrayEncoder("v", "image", VIT_FIELDS, random_rows(VIT_FIELDS, 2))
    extract(manifest, [text, image], root / "cache", shard_size=64, batch_size=8, workers=0, progress=False,
            log=lambda m: None)
    return root, manifest, {"text": str(root / "cache/vitw/t"), "image": str(root / "cache/vitw/v")}


def test_a_cached_encoder_mode_run_reads_and_records_the_visual_cls(vit_cache):
    root, manifest, caches = vit_cache

    def run(**options):
        spec = RunSpec(str(manifest), caches, "infig", {**TINY, "stack_layers": 1, **options},
                       TrainConfig(max_epochs=1, batch_size=10), 0)
        path = fit_run(spec, root / "runs", log=lambda m: None).path
        return json.loads((path / "config.json").read_text()), (path / "README.md").read_text()

    config, card = run(align="encoder")
    assert config["fields"]["image"]["pooled"] == "image/cls" and config["caches"]["image"]["fields"][0] == "image/cls"
    assert config["head_record"] == {"gam_image": "image/cls: the image encoder's [CLS]"}
    assert "- gam image: image/cls: the image encoder's [CLS]" in card
    config, _ = run(align="stack")  # the stack's CLS: the image vector is not read, the field stays as before
    assert config["fields"]["image"]["pooled"] == "image/pooled"
    assert config["head_record"] == {"gam_image": "the image stack's CLS at layer -1"}


def test_finetune_default_is_the_papers_wiring_with_the_vit_cls(tmp_path, tokenizer):
    """finetune --head infig with a ViT: no stack (depth 0), GAM aligns the ViT's own [CLS] (image/cls of its
    last layer); the run records it and reloads with the same field."""
    import tiny_models
    from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run
    from msa_cache.finished_run import load_run

    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(18):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.jpg")
        rows.append({"id": f"p{i}", "text": f"post {i} is {'good bad meh'.split()[i % 3]}", "image": f"img/{i}.jpg",
                     "label": i % 3, "split": "train" if i < 12 else "dev"})
    meta = ManifestMeta(dataset="ftw", classes=["a", "b", "c"], root=str(tmp_path), builder="test")
    manifest = write_manifest(rows_to_table(rows), meta, tmp_path / "ftw.parquet")
    bert, vit = tiny_models.model_folders(tmp_path / "models", tokenizer)
    options = {k: v for k, v in TINY.items()}
    spec = FinetuneSpec(str(manifest), "infig", [str(bert), str(vit)], head_options=options,
                        train=FinetuneConfig(batch_size=6, max_epochs=1, head_epochs=0, max_length=12, augment=False))
    result = finetune_run(spec, tmp_path / "runs", log=lambda s: None)
    config = json.loads((result.path / "config.json").read_text())
    assert config["spec"]["head_options"]["stack_layers"] == 0 and config["spec"]["head_options"]["align"] == "encoder"
    assert config["fields"]["image"]["pooled"] == "image/cls"
    assert config["head_record"] == {"gam_image": "image/cls: the image encoder's [CLS]"}
    model, _ = load_run(result.path)
    assert model.fields["image"]["image"][0] == "image/cls"
    head = model.head
    assert all(len(s.layers) == 0 for s in head.stacks.values())
    batch = {"pixel_values": torch.rand(3, 3, 32, 32)}
    vit_model = model.encoders["image"].model
    with torch.no_grad():
        cls = vit_model(pixel_values=batch["pixel_values"]).last_hidden_state[:, 0]
        fields = model.encoders["image"]._forward(batch)
    torch.testing.assert_close(fields["image/cls"], cls)
    # the same spec again is the same finished run
    assert finetune_run(spec, tmp_path / "runs", log=lambda s: None).skipped
