"""Seed 000's image baselines by name in fine-tune mode: `cnn-small` (trained from pixels) and
`resnet50` unfrozen; no download (resnet50 is built with weights=None, its pretrained path faked)."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file
from click.testing import CliRunner

from msa_cache.encoders import ENCODERS, EncoderUnavailable, build_encoder
from msa_cache.encoders.cnn import CNN_SMALL_CHANNELS, SmallCNN
from msa_cache.finetune.model import FinetuneModel
from msa_cache_cli.finetune import finetune_cmd

from test_finetune import make_world

torchvision = pytest.importorskip("torchvision")


def test_cnn_small_size_grid_and_fixed_init():
    m = SmallCNN()
    assert sum(p.numel() for p in m.parameters()) == 389_376  # the count its docstring and docs state
    assert CNN_SMALL_CHANNELS == (32, 64, 128, 256)
    enc = build_encoder("cnn-small")
    assert enc.field_shapes() == {"image/pooled": (256,), "image/tokens": (49, 256)}
    state = torch.random.get_rng_state()
    again = build_encoder("cnn-small")
    assert torch.equal(state, torch.random.get_rng_state())  # the fixed init leaves the caller's stream alone
    assert again.weights_sha256 == enc.weights_sha256 and enc.revision == "random-init-seed-0"
    assert ENCODERS["cnn-small"].offline


def test_cnn_small_trains_from_pixels_by_name(tmp_path, tokenizer):
    root, manifest, _, _ = make_world(tmp_path, tokenizer)
    r = CliRunner().invoke(finetune_cmd, ["--head", "uni-image", "--encoder", "cnn-small", "--manifest", str(manifest),
                                          "--runs", str(root / "runs"), "--unfreeze", "image", "--head-epochs", "0",
                                          "--encoder-lr", "1e-3", "--max-epochs", "1", "--batch-size", "8",
                                          "--no-augment", "--hidden", "16"])
    assert r.exit_code == 0, r.output
    run = next((root / "runs" / "toy").glob("finetune-uni-image-cnn-small-*/seed-0"))
    state = load_file(run / "model.safetensors")
    init = build_encoder("cnn-small").model.state_dict()
    conv = next(k for k in state if k.endswith("blocks.0.weight"))
    assert not torch.equal(state[conv], init["blocks.0.weight"])  # trained, not the initialisation
    config = json.loads((run / "config.json").read_text())
    assert config["encoders"]["image"]["model_id"] == "cnn-small"


def test_resnet50_pretrained_path_asks_for_imagenet_weights(monkeypatch, tmp_path):
    # The real builder path: torchvision.models.resnet50(weights=ResNet50_Weights.IMAGENET1K_V2), here
    # answered by a weights=None model (no download), with the checkpoint file present offline.
    asked, real = [], torchvision.models.resnet50

    def fake_resnet50(weights=None):
        asked.append(weights)
        return real(weights=None)

    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.makedirs(tmp_path / "hub" / "checkpoints")
    (tmp_path / "hub" / "checkpoints" / os.path.basename(weights.url)).write_bytes(b"")
    monkeypatch.setattr(torchvision.models, "resnet50", fake_resnet50)
    enc = build_encoder("resnet50")
    assert asked == [weights] and enc.model_id == "torchvision/resnet50" and "IMAGENET1K_V2" in enc.revision
    assert enc.image.size == 224 and enc.field_shapes()["image/tokens"] == (49, 2048)


def test_resnet50_offline_without_weights_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailable, match="encoder 'resnet50'"):
        build_encoder("resnet50")


def test_resnet50_trains_unfrozen():
    torch.manual_seed(0)
    enc = build_encoder("resnet50", model=torchvision.models.resnet50(weights=None))
    model = FinetuneModel({"image": enc}, "uni-image", 3, {"hidden": 16, "dropout": 0.0})
    model.set_trainable(["image"])
    model.train()
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    batch = {"image/pixel_values": torch.randn(2, 3, 224, 224), "ok": torch.ones(2, dtype=torch.bool),
             "labels": torch.tensor([0, 2])}
    loss, _ = model.loss(batch)
    loss.backward()
    assert enc.model[0].weight.grad is not None and float(enc.model[0].weight.grad.abs().sum()) > 0  # conv1
    bn_mean = next(k for k in before if k.endswith("running_mean"))
    assert not torch.equal(before[bn_mean], enc.model.state_dict()[bn_mean])  # BatchNorm in train mode
    model.set_trainable([])
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
