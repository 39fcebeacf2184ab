"""`msa-cache export-encoder RUN OUT --modality text|image`: a fine-tuned encoder as a model folder;
a thin layer over msa_cache.finetune.export."""
from __future__ import annotations

import click

from msa_cache.finetune.config import EXPORTABLE


@click.command("export-encoder")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path())
@click.option("--modality", required=True, type=click.Choice(EXPORTABLE), help="which of the run's encoders")
def export_cmd(run, out, modality):
    """Write a fine-tune run's fine-tuned encoder to the model folder OUT, which
    `extract --encoder OUT` (and finetune, predict) load like any other encoder.

    \b
    msa-cache finetune --head uni-text --encoder minilm --unfreeze text ...
    msa-cache export-encoder runs/mvsa-single/finetune-uni-text-minilm-.../seed-0 models/minilm-ft --modality text
    msa-cache extract --encoder models/minilm-ft --max-length 128
    """
    from msa_cache.finetune.export import export_encoder

    info = export_encoder(run, out, modality, log=click.echo)
    pre, src = info["preprocessing"], info["source"]
    click.echo(f"exported the {modality} encoder of {src['run_id']} (base {src['base_encoder']}, "
               f"weights {src['weights_sha256']}) to {out}")
    if modality == "text":
        # Extraction options are chosen at extract time; these reproduce the run's inputs.
        click.echo(f"extract with the run's text inputs: msa-cache extract --encoder {out} "
                   f"--max-length {pre.get('max_length_requested', pre['max_length'])} --clean {pre['clean']}")
