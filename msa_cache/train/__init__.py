"""What both training modes share: the run driver (resolve, skip if finished, build the run folder),
the epoch loop and precision, run folders and their identity (and `run_mode`), command.yaml, model
cards, TensorBoard events and predictions. `fit/` (cached features) and `finetune/` (encoders in the
loop) import this floor; it imports neither. The metrics table is one floor lower (msa_cache/metrics.py)."""
