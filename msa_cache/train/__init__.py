"""What both training modes share: the epoch loop, run folders and their identity, command.yaml,
model cards, TensorBoard events, metrics and predictions. `fit/` (cached features) and
`finetune/` (encoders in the loop) import this floor; it imports neither."""
