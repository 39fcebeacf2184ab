"""Fusion heads trained on cached features. One module per method; importing a
module registers its heads (see registry.py). Add a head: one file + one line here."""
from msa_cache.heads.base import Batch, Head, HeadConfig, HeadOutput, ModalityInput, ModalitySpec
from msa_cache.heads.registry import HEADS, create_head, get_head, make_config, register_head

from msa_cache.heads import uni  # noqa: F401,E402  uni-text, uni-image
from msa_cache.heads import probe  # noqa: F401,E402  probe
from msa_cache.heads import late  # noqa: F401,E402  late
from msa_cache.heads import autoencoder  # noqa: F401,E402  ae-cat, ae-add
from msa_cache.heads import attention_block  # noqa: F401,E402  ab-cat, ab-add
from msa_cache.heads import mha  # noqa: F401,E402  mha
from msa_cache.heads import mdse  # noqa: F401,E402  mdse
from msa_cache.heads import infig  # noqa: F401,E402  infig

__all__ = ["Batch", "Head", "HeadConfig", "HeadOutput", "ModalityInput", "ModalitySpec", "HEADS",
           "create_head", "get_head", "make_config", "register_head"]
