"""Fine-tune mode on tiny random models: the staged schedule (frozen encoders stay bit-identical,
unfrozen ones change), loss goes down, gradient accumulation, augmentation in train mode only,
the run directory and CLI, the CLIP / VisualBERT baselines, and INFIG aligning the encoders' own layers."""
import json
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file
from click.testing import CliRunner
from PIL import Image
from torch import nn

from msa_cache.encoders import EncoderUnavailable, build_encoder
from msa_cache.encoders.base import ImageSpec
from msa_cache.encoders.cnn import CNNEncoder
from msa_cache.finetune import FinetuneConfig, FinetuneSpec, finetune_run
from msa_cache.finetune.visualbert import visualbert_encoder
from msa_cache.finetune.data import PostCollator, PostDataset, SynonymAug, make_text_aug
from msa_cache.finetune.model import FinetuneModel
from msa_cache.finetune.optim import make_optimizer, warmup_linear
from msa_cache.finetune.train import backward_step, optimizer_step
from msa_cache.train.loop import grad_scaler, resolve_precision, train_rows
from msa_cache.manifest import ManifestMeta, read_manifest, rows_to_table, write_manifest
from msa_cache.train.command import command_options
from msa_cache.study.compare import finished_entries
from msa_cache.train.rundir import append_history
from msa_cache.finished_run import load_run
from msa_cache_cli.finetune import finetune_cmd

import tiny_models

N, N_TRAIN, N_DEV = 36, 24, 6
WORDS = ["good", "meh", "bad"]
COLOURS = [(220, 40, 40), (40, 220, 40), (40, 40, 220)]


def write_world(root):
    """Posts whose text word and image colour both give the class; a back-translation file in splits/."""
    (root / "img").mkdir(parents=True)
    (root / "splits").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N):
        y = i % 3
        pixels = np.clip(np.array(COLOURS[y]) + rng.normal(0, 30, (24, 28, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i}.jpg")
        split = "train" if i < N_TRAIN else "dev" if i < N_TRAIN + N_DEV else "test"
        rows.append({"id": f"p{i}", "text": f"a {WORDS[y]} day, post {i}", "image": f"img/{i}.jpg",
                     "label": y, "split": split})
    rows[2].update(image_ok=False, problem="image missing")  # a bad row: zero image features
    (root / "splits" / "translation.json").write_text(json.dumps(
        [{"id": f"p{i}", "text_translation": f"translated {WORDS[i % 3]} {i}"} for i in range(N)]))
    meta = ManifestMeta(dataset="toy", classes=["positive", "neutral", "negative"], root=str(root), builder="test")
    return write_manifest(rows_to_table(rows), meta, root / "toy.parquet")


def tiny_bert(tokenizer, seed=0):
    return tiny_models.tiny_bert(tokenizer, seed=seed, dropout=0.0)  # no dropout: exact gradient checks


tiny_vit = tiny_models.tiny_vit


def make_world(root, tokenizer):
    """The manifest and two local model folders (what `--encoder FOLDER` and predict can reload)."""
    manifest = write_world(root / "data")
    bert, vit = tiny_models.model_folders(root / "models", tokenizer)
    return root, manifest, bert, vit


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    return make_world(tmp_path_factory.mktemp("ft"), tokenizer)


def tiny_cnn_encoder():
    """A conv trunk with BatchNorm: frozen running statistics must not drift either."""
    torch.manual_seed(2)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.BatchNorm2d(8), nn.ReLU())
    return CNNEncoder("tinycnn", trunk, ImageSpec(size=32, resize=None), model_id="in-memory")


def _model(tokenizer, head="late", options=None, image=None):
    encoders = {"text": build_encoder("bert", model=tiny_bert(tokenizer), tokenizer=tokenizer, max_length=16),
                "image": image or build_encoder("vit", model=tiny_vit())}
    torch.manual_seed(0)
    return FinetuneModel(encoders, head, 3, options or {"hidden": 16, "dropout": 0.0})


def _batches(model, manifest_path, sizes, train=False, augment=False):
    manifest = read_manifest(manifest_path)
    specs = model.input_specs()
    ds = PostDataset(manifest, np.arange(N_TRAIN), specs, train=train, augment=augment)
    collate, out, start = PostCollator(specs, model.pad_to_max), [], 0
    for size in sizes:
        out.append(collate([ds[i] for i in range(start, start + size)]))
        start += size
    return out


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_steps(model, batches, steps):
    opt, sched = make_optimizer(model, 1e-2, 1e-3, 0.0, total_steps=100, warmup=0.0, encoder_start=0)
    scaler = grad_scaler("fp32")
    losses = []
    for step in range(steps):
        loss, _ = backward_step(model, batches[step % len(batches)], None, torch.device("cpu"), "fp32", scaler)
        optimizer_step(model, opt, scaler)
        losses.append(loss)
    return losses


def test_few_steps_reduce_the_loss(world, tokenizer):
    _, manifest, _, _ = world
    model = _model(tokenizer)
    model.set_trainable(["text", "image"])
    model.train()
    batch = _batches(model, manifest, [12])
    losses = _train_steps(model, batch, 15)
    assert losses[-1] < 0.7 * losses[0], losses


def test_frozen_stage_is_bit_identical_and_unfreezing_changes_encoders(world, tokenizer):
    _, manifest, _, _ = world
    model = _model(tokenizer, image=tiny_cnn_encoder())
    batches = _batches(model, manifest, [8, 8], train=True, augment=True)
    text0, image0, head0 = (_snapshot(m) for m in (model.encoders["text"].model, model.encoders["image"].model,
                                                   model.head))
    model.set_trainable([])  # the head-only stage
    model.train()
    assert not model.encoders["image"].model.training  # frozen: eval mode, BatchNorm statistics fixed
    _train_steps(model, batches, 3)
    for before, module in ((text0, model.encoders["text"].model), (image0, model.encoders["image"].model)):
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # parameters and buffers
    assert any(not torch.equal(head0[k], v) for k, v in model.head.state_dict().items())

    model.set_trainable(["text"])  # only the text encoder unfrozen
    model.train()
    _train_steps(model, batches, 2)
    text1, image1 = model.encoders["text"].model.state_dict(), model.encoders["image"].model.state_dict()
    assert any(not torch.equal(text0[k], text1[k]) for k in text0)
    assert all(torch.equal(image0[k], image1[k]) for k in image0)
    model.set_trainable(["image"])
    model.train()
    _train_steps(model, batches, 2)
    image2 = model.encoders["image"].model.state_dict()
    assert not torch.equal(image0["0.weight"], image2["0.weight"])
    assert not torch.equal(image0["1.running_mean"], image2["1.running_mean"])  # BatchNorm trains when unfrozen


def test_accumulated_gradient_equals_the_big_batch_gradient(world, tokenizer):
    _, manifest, _, _ = world
    model = _model(tokenizer, head="ae-cat", options={"latent": 8, "hidden": 16, "dropout": 0.0})
    model.set_trainable(["text", "image"])
    model.eval()  # no dropout: the two ways must see the same function
    scaler = grad_scaler("fp32")
    cpu = torch.device("cpu")

    def grads(batches):
        model.zero_grad(set_to_none=True)
        for b in batches:
            backward_step(model, b, None, cpu, "fp32", scaler, divide=len(batches))
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    small = grads(_batches(model, manifest, [4, 4, 4]))  # accumulate 3 x batch 4
    big = grads(_batches(model, manifest, [12]))
    assert small.keys() == big.keys() and any("encoder_models.text" in k for k in big)
    for k in big:
        assert torch.allclose(small[k], big[k], rtol=1e-3, atol=1e-6), k


def test_grad_checkpointing_keeps_the_gradient(world, tokenizer):
    _, manifest, _, _ = world
    model = _model(tokenizer)  # no dropout anywhere: train mode is deterministic
    model.set_trainable(["text", "image"])
    model.train()  # HF checkpoints in train mode only
    batch = _batches(model, manifest, [6])[0]

    def grads():
        model.zero_grad(set_to_none=True)
        backward_step(model, batch, None, torch.device("cpu"), "fp32", grad_scaler("fp32"))
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    assert model.enable_grad_checkpointing() == []  # both HF models support it
    for m in (model.encoders["text"].model, model.encoders["image"].model):
        assert getattr(m, "is_activation_checkpointing", None) or m.is_gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    assert any(k.startswith("encoder_models.text") for k in checkpointed)
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)
    cnn = FinetuneModel({"image": tiny_cnn_encoder()}, "uni-image", 3, {"hidden": 8})
    assert cnn.enable_grad_checkpointing() == ["tinycnn"]  # reported, not silently ignored


def test_limit_train_and_precision(world):
    _, manifest_path, _, _ = world
    manifest = read_manifest(manifest_path)
    subset = train_rows(manifest, 10)
    assert len(subset) == 10 and np.array_equal(subset, train_rows(manifest, 10))  # the same for every seed
    assert set(subset) <= set(range(N_TRAIN)) and len(train_rows(manifest, None)) == N_TRAIN
    assert resolve_precision(torch.device("cpu"), amp=True) == "fp32"  # AMP is for CUDA only
    with pytest.raises(ValueError, match="--unfreeze audio: choose from text,image"):
        FinetuneConfig(unfreeze=["text", "audio"]).resolved()
    c = FinetuneConfig(head_epochs=1, unfreeze_from=3).resolved()
    assert (c.head_epochs, c.first_unfrozen_epoch) == (2, 3)


def test_augmentation_changes_pixels_in_train_mode_only(world, tokenizer):
    _, manifest_path, _, _ = world
    manifest = read_manifest(manifest_path)
    spec = ImageSpec(size=32, resize=None)
    specs = {"image": (None, spec)}
    evals = PostDataset(manifest, np.arange(N_TRAIN), specs)
    train = PostDataset(manifest, np.arange(N_TRAIN), specs, train=True, augment=True)
    no_aug = PostDataset(manifest, np.arange(N_TRAIN), specs, train=True, augment=False)
    with Image.open(manifest.image_path("img/0.jpg")) as im:
        expected = spec.transform()(im.convert("RGB"))  # extraction's own preprocessing
    torch.manual_seed(0)
    assert torch.equal(evals[0]["pixels"]["image"], expected) and torch.equal(evals[0]["pixels"]["image"], expected)
    assert torch.equal(no_aug[0]["pixels"]["image"], expected)
    draws = [train[0]["pixels"]["image"] for _ in range(4)]
    assert all(d.shape == expected.shape for d in draws)
    assert sum(not torch.equal(d, expected) for d in draws) >= 3
    assert evals[2]["ok"] is False and not evals[2]["pixels"]["image"].any()  # the flagged image: zeros


def test_text_augmentation(world, tokenizer):
    _, manifest_path, _, _ = world
    manifest = read_manifest(manifest_path)
    aug = make_text_aug("translation", manifest)  # found in <root>/splits/translation.json
    torch.manual_seed(0)
    outs = {aug("p1", "original") for _ in range(30)}
    assert outs == {"original", "translated meh 1"}
    assert aug("unknown-id", "kept") == "kept"
    torch.manual_seed(0)
    syn = SynonymAug(p=1.0)
    assert syn("x", "Happy and sad").split()[0] in ("Glad", "Joyful", "Cheerful")
    assert syn("x", "nothing to swap") == "nothing to swap"
    specs = {"text": (build_encoder("bert", model=tiny_bert(tokenizer), tokenizer=tokenizer).text, None)}
    evals = PostDataset(manifest, np.arange(N_TRAIN), specs, train=False, text_aug=aug)
    assert all(evals[i]["texts"]["text"] == manifest.column("text")[i] for i in range(5))  # eval: no text aug
    with pytest.raises(FileNotFoundError, match="no translation.json"):
        manifest.meta.root = str(manifest.root / "img")
        make_text_aug("translation", manifest)


def test_warmup_then_linear_decay():
    # transformers' get_linear_schedule_with_warmup: warm-up step/warm (0 at the first step), then decay to 0
    f = warmup_linear(total=10, warmup=0.2)
    assert [round(8 * f(s), 6) for s in range(11)] == [0, 4, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    g = warmup_linear(total=10, warmup=0.2, start=4)  # the encoders' clock starts at unfreezing: 6 steps, 1 warm
    assert [round(5 * g(s), 6) for s in range(11)] == [0, 0, 0, 0, 0, 5, 4, 3, 2, 1, 0]
    h = warmup_linear(total=4, warmup=0.0)  # no warm-up: the full lr at the first step
    assert [h(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


class _TwoGroups:
    def __init__(self):
        self.head, self.encoder = nn.Linear(2, 2), nn.Linear(2, 2)

    def head_params(self):
        return list(self.head.parameters())

    def encoder_params(self):
        return list(self.encoder.parameters())


@pytest.mark.parametrize("warmup", [0.25, 0.0])
def test_each_parameter_group_follows_its_own_schedule(warmup):
    model = _TwoGroups()
    optimizer, schedule = make_optimizer(model, lr=1e-3, encoder_lr=1e-4, weight_decay=0.0, total_steps=8,
                                         warmup=warmup, encoder_start=4)
    lrs = []
    for _ in range(8):  # the lr each optimizer step runs at, as the train loop steps them
        lrs.append(tuple(g["lr"] for g in optimizer.param_groups))
        optimizer.step()
        schedule.step()
    head, encoder = (np.array(x) for x in zip(*lrs))
    if warmup:  # head: 8 steps, 2 warm; encoders: 4 steps from step 4, 1 warm
        assert np.allclose(head / 1e-3, [0, 0.5, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
        assert np.allclose(encoder / 1e-4, [0, 0, 0, 0, 0, 1, 2 / 3, 1 / 3])
    else:
        assert np.allclose(head / 1e-3, [1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
        assert np.allclose(encoder / 1e-4, [0, 0, 0, 0, 1, 3 / 4, 2 / 4, 1 / 4])


def test_the_lr_schedule_is_part_of_a_fine_tune_runs_identity():
    from msa_cache.finetune.config import LR_SCHEDULE

    identity = FinetuneSpec("m.parquet", "late", ["minilm"]).identity("fp", {})
    assert identity["lr_schedule"] == LR_SCHEDULE == "transformers-linear-warmup"


def test_cli_finetune_run_directory_staged_and_skipped(world, tmp_path):
    root, manifest, bert, vit = world
    args = ["--head", "ae-cat", "--latent", "8", "--encoder", str(bert), "--encoder", str(vit), "--manifest",
            str(manifest), "--runs", str(tmp_path), "--max-epochs", "3", "--head-epochs", "1", "--batch-size", "8",
            "--max-length", "16", "--text-aug", "synonyms", "--lr", "3e-3", "--encoder-lr", "1e-3"]
    r = CliRunner().invoke(finetune_cmd, args)
    assert r.exit_code == 0, r.output
    run = next(tmp_path.glob("toy/finetune-ae-cat-tiny-bert+tiny-vit-latent8-*/seed-0"))
    assert sorted(p.name for p in run.iterdir()) == ["README.md", "command.yaml", "config.json", "confusion.png", "history.jsonl",
                                                     "metrics.json", "model.safetensors", "predictions.parquet"]
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "finetune" and config["spec"]["head"] == "ae-cat"
    assert {r["encoder"] for r in config["encoders"].values()} == {str(bert), str(vit)}
    assert config["encoders"]["text"]["preprocessing"]["max_length"] == 16
    assert {k: config["optimizer"][k] for k in ("optimizer", "lr", "encoder_lr", "weight_decay", "lr_schedule")} == {
        "optimizer": "adamw", "lr": 3e-3, "encoder_lr": 1e-3, "weight_decay": 0.01,
        "lr_schedule": "transformers-linear-warmup"}  # the optimiser as used, recorded
    assert "- optimiser: adamw (lr 0.003, encoder_lr 0.001" in (run / "README.md").read_text()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["stage"] for h in history if "stage" in h][:2] == ["head", "head+image,text"]
    # lr at each epoch's first step: the encoders' warm-up starts at 0 when they are unfrozen (epoch 2)
    assert history[0]["lr_encoder"] == history[1]["lr_encoder"] == 0.0 and history[2]["lr_encoder"] > 0
    # one progress line per epoch (as fit's), with fine-tune's stage and learning rates
    lines = re.findall(r"epoch \d/3, train loss .*", r.output)  # (transformers' loading bar may precede one)
    assert [line.split(",")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], r.output
    assert "stage head+image,text, lr " in lines[1] and "ETA" in lines[1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"train", "dev", "test"} and metrics["dev"]["n"] == N_DEV
    pred = pq.read_table(run / "predictions.parquet").to_pydict()
    assert len(pred["id"]) == N  # every row, like a cached run
    # `compare --all-runs` reads the same format, so the fine-tuned run joins the leaderboard.
    [entry] = finished_entries(tmp_path / "toy")
    assert entry.label == "finetune-ae-cat-tiny-bert+tiny-vit-latent8"
    assert entry.stat("dev", "weighted_f1") == (metrics["dev"]["weighted_f1"], 0.0)

    model, cfg = load_run(run)  # load_run rebuilds encoders + head for a fine-tuned run
    assert cfg["mode"] == "finetune" and not model.training
    again = CliRunner().invoke(finetune_cmd, args)
    assert again.exit_code == 0 and "already finished, skipped" in again.output
    # the round trip: command.yaml or config.json as --config gives the same run, skipped
    assert yaml.safe_load((run / "command.yaml").read_text()) == command_options(config)
    for source in ("command.yaml", "config.json"):
        again = CliRunner().invoke(finetune_cmd, ["--config", str(run / source)])
        assert again.exit_code == 0 and f"{run}  (already finished, skipped)" in again.output, again.output
    other = CliRunner().invoke(finetune_cmd, ["--config", str(run / "config.json"), "--max-epochs", "1"])
    assert other.exit_code == 0 and "trained in" in other.output and str(run) not in other.output
    bad = CliRunner().invoke(finetune_cmd, ["--encoder", str(bert), "--manifest", str(manifest)])
    assert bad.exit_code != 0 and "either --head" in bad.output
    probe = CliRunner().invoke(finetune_cmd, ["--head", "probe", "--encoder", str(bert), "--manifest", str(manifest),
                                              "--runs", str(tmp_path)])
    assert probe.exit_code != 0 and "closed form" in str(probe.exception or probe.output)


def _tiny_clip_folder(folder, tokenizer):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(3)
    cfg = CLIPConfig(text_config={"vocab_size": tokenizer.vocab_size, "hidden_size": 32, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
                                  "eos_token_id": tokenizer.sep_token_id},
                     vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                                    "num_attention_heads": 2, "intermediate_size": 64},
                     projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # a BERT tokenizer: no CLIP vocabulary ships offline
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def _tiny_visualbert_folder(folder, tokenizer):
    from transformers import VisualBertConfig, VisualBertModel

    torch.manual_seed(4)
    VisualBertModel(VisualBertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     visual_embedding_dim=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.parametrize("baseline", ["clip", "visualbert"])
def test_baselines_fine_tune_from_local_folders(world, tokenizer, tmp_path, baseline, monkeypatch):
    import msa_cache.train.driver as driver_module  # the one run driver appends each epoch's record

    root, manifest, bert, vit = world
    folder = tmp_path / f"tiny-{baseline}"
    (_tiny_clip_folder if baseline == "clip" else _tiny_visualbert_folder)(folder, tokenizer)
    encoders = [str(folder)] if baseline == "clip" else [str(folder), str(vit)]
    spec = FinetuneSpec(str(manifest), baseline, encoders, baseline, {"hidden": 16},
                        FinetuneConfig(max_epochs=2, head_epochs=1, batch_size=8, max_length=16, encoder_lr=1e-3), 0)
    grown = []  # history.jsonl in the tmp folder after each epoch's append

    def append_and_look(folder, record):
        append_history(folder, record)
        grown.append((folder.name, len((folder / "history.jsonl").read_text().splitlines())))

    monkeypatch.setattr(driver_module, "append_history", append_and_look)
    r = finetune_run(spec, tmp_path / "runs", log=lambda m: None)
    assert grown == [("seed-0.tmp-" + str(os.getpid()), 1), ("seed-0.tmp-" + str(os.getpid()), 2)]
    # the baseline's model and image encoder map back to --model / --encoder: the same run, skipped
    again = CliRunner().invoke(finetune_cmd, ["--config", str(r.path / "command.yaml")])
    assert again.exit_code == 0 and f"{r.path}  (already finished, skipped)" in again.output, again.output
    config = json.loads((r.path / "config.json").read_text())
    assert r.path.parent.name.startswith(f"finetune-{baseline}-tiny-{baseline}")
    assert set(config["encoders"]) == ({"clip"} if baseline == "clip" else {"visualbert", "image"})
    history = [json.loads(line) for line in (r.path / "history.jsonl").read_text().splitlines()]
    assert history[1]["stage"] == "head+image,text" and np.isfinite(history[1]["train_loss"])
    model, _ = load_run(r.path)
    state = load_file(r.path / "model.safetensors")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_visualbert_hub_model_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailable, match="visualbert.*cannot load 'uclanlp/visualbert-vqa-coco-pre'"):
        visualbert_encoder("uclanlp/visualbert-vqa-coco-pre")


INFIG_TINY = {"width": 16, "num_heads": 2, "stack_layers": 1, "fusion_layers": 1, "embed": 8, "queue_size": 64,
              "hfam_layers": 2, "hidden": 16, "dropout": 0.0}


def test_infig_aligns_the_encoders_own_last_layers(world, tokenizer):
    """align="encoder" (the fine-tune default): HFAM's text levels are BERT's own layers -2 and -1, read live."""
    _, manifest, _, _ = world
    text = build_encoder("bert", model=tiny_bert(tokenizer), tokenizer=tokenizer, max_length=16, layers=(-2,))
    torch.manual_seed(0)
    model = FinetuneModel({"text": text, "image": tiny_cnn_encoder()}, "infig", 3, {**INFIG_TINY, "align": "encoder"})
    head = model.head
    assert "text@-2" in model.spec and head.encoder_side == {"text": True, "image": False}  # a CNN keeps the stack
    model.set_trainable(["text"])
    model.train()
    batch = _batches(model, manifest, [6])[0]
    seen = []
    orig = head._hfam
    head._hfam = lambda img, txt, *paired: seen.append(txt) or orig(img, txt, *paired)
    out = model(batch)
    hb = model.head_batch(batch)
    assert hb.ids == [str(r) for r in batch["rows"].tolist()]  # the GAM queue's row ids
    mask = batch["text/attention_mask"].bool()
    states = text.model(input_ids=batch["text/input_ids"], attention_mask=batch["text/attention_mask"],
                        output_hidden_states=True).hidden_states
    (level_2, m2), (level_1, m1) = seen[0]
    zero = lambda h: h.masked_fill(~mask.unsqueeze(-1), 0.0)  # noqa: E731
    torch.testing.assert_close(level_2, head.level_proj["text@-2"](zero(states[-2])), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(level_1, head.stacks["text"].proj(zero(states[-1])), atol=1e-5, rtol=1e-4)
    assert torch.equal(m1, mask) and torch.equal(m2, mask)
    torch.testing.assert_close(out.aux["global_text"], head.stacks["text"].proj(states[-1][:, 0]).detach(),
                               atol=1e-5, rtol=1e-4)  # GAM: the last layer's CLS
    # L_f alone trains the encoder's last two layers (not only projections on top)
    model.zero_grad(set_to_none=True)
    out.aux["loss_hfam"].backward()
    layers = text.model.encoder.layer
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[-1].parameters() if p.requires_grad)
    assert layers[-2].attention.self.query.weight.grad.abs().sum() > 0


def test_infig_accumulate_updates_ema_and_queue_once_per_step(world, monkeypatch, tmp_path):
    """finetune --accumulate 3, batch 4, 24 train rows: 6 micro-batches, 2 optimizer steps per epoch."""
    from msa_cache.heads.infig import Infig

    root, manifest, bert, vit = world
    calls = {"ema": 0, "stepped": 0}
    ema, stepped = Infig._momentum_update, Infig.optimizer_stepped

    def count_ema(self):
        calls["ema"] += 1
        return ema(self)

    def count_stepped(self):
        calls["stepped"] += 1
        assert len(self._pending) == 3  # the step's three micro-batches, enqueued together
        return stepped(self)

    monkeypatch.setattr(Infig, "_momentum_update", count_ema)
    monkeypatch.setattr(Infig, "optimizer_stepped", count_stepped)
    spec = FinetuneSpec(str(manifest), "infig", [str(bert), str(vit)], head_options=INFIG_TINY,
                        train=FinetuneConfig(batch_size=4, accumulate=3, max_epochs=2, head_epochs=1, max_length=16,
                                             augment=False, patience=5))
    result = finetune_run(spec, tmp_path, log=lambda s: None)
    assert calls == {"ema": 4, "stepped": 4}  # 2 epochs x 2 steps, not 2 x 6 micro-batches
    config = json.loads((result.path / "config.json").read_text())
    assert config["spec"]["head_options"]["align"] == "encoder"  # the fine-tune default
    assert "align" not in result.path.parent.name  # a default: not in the folder name
    assert {r["layers"] == [-2] for r in config["encoders"].values()} == {True}  # text and ViT asked for layer -2
    state = load_file(result.path / "model.safetensors")
    assert int(state["head.queue_len"]) in (24, 48)  # every train row once per epoch (the best epoch's state)
    model, _ = load_run(result.path)  # rebuilt with the recorded layers
    assert set(model.head.level_proj) == {"text@-2", "image@-2"}


def test_baselines_are_registered_with_their_traits_and_map_back_to_their_flags():
    """Each registered baseline: a paper, a --help line, and --model / --encoder that command.yaml says back."""
    from msa_cache.finetune.baselines import BASELINES, CATALOG

    assert sorted(BASELINES) == sorted(CATALOG) == ["clip", "visualbert"]
    given = {"clip": ("org/clip-x", []), "visualbert": ("org/vb", ["vit"])}
    for name, baseline in BASELINES.items():
        assert baseline.name == name and baseline.paper and CATALOG[name].summary and CATALOG[name].default_model
        model, encoders = given[name]
        spec = {"manifest": "m.parquet", "head": name, "baseline": name, "head_options": {}, "seed": 0,
                "encoders": baseline.spec_encoders(model, encoders), "train": {}}
        opts = command_options({"mode": "finetune", "spec": spec})
        assert opts["baseline"] == name and opts["model"] == model and opts.get("encoder", []) == encoders
    assert BASELINES["visualbert"].spec_encoders(None, ["vit"])[0] == CATALOG["visualbert"].default_model
    assert BASELINES["clip"].spec_encoders(None, []) == []  # the registered clip encoder, nothing recorded
    with pytest.raises(ValueError, match="--baseline clip takes its weights from --model"):
        BASELINES["clip"].spec_encoders(None, ["vit"])
