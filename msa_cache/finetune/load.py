"""Reloading a finished fine-tune run: its recorded encoders (verified), the head, its weights."""
from __future__ import annotations

from pathlib import Path

from msa_cache.cache.fields import recorded_image_pool
from msa_cache.finetune.config import FinetuneSpec
from msa_cache.finetune.build import assemble_model
from msa_cache.finetune.model import FinetuneModule
from msa_cache.finetune.record import rebuild_encoder
from msa_cache.train.rundir import load_weights


def load_finetune_run(path: str | Path, config: dict) -> tuple[FinetuneModule, dict]:
    """The run's model (eval mode, CPU) and its config.json; EncoderUnavailable when an encoder cannot load."""
    path = Path(path)
    spec = FinetuneSpec.from_dict(config["spec"])
    # The pretrained encoders give the architecture, tokenizer and preprocessing; the run's weights then
    # replaces every weight with the fine-tuned ones.
    encoders = {role: rebuild_encoder(record, where=str(path)) for role, record in config["encoders"].items()}
    model = assemble_model(spec, len(config["classes"]), encoders, image_pool=recorded_image_pool(config))
    load_weights(path, model)
    return model.eval(), config
