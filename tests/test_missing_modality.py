"""A missing modality: each head's own stand-in (Head.missing_input / drop_modalities) and `--modality-dropout P`
on fit (per train row, one side dropped with probability P, never both; in the run identity only when set)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.seeds import fit_seeds, spec_refusal
from msa_cache.fit.trainer import fit_run
from msa_cache.heads import HEADS, Batch, create_head
from msa_cache.heads.base import modality_side
from msa_cache.train.identity import config_hash
from msa_cache.train.modality_dropout import ModalityDropout
from msa_cache_cli.main import main as cli
from pooled_world import make_world
from test_heads import ALL, C, SMALL, make_data, spec_for
from test_infig import TINY as INFIG_TINY, make_batch as infig_batch, make_spec as infig_spec

B = 8
EVERY_OTHER = torch.arange(B) % 2 == 0


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _head(name: str, spec=None, options=None):
    torch.manual_seed(0)
    return create_head(name, spec or spec_for(("text", "image")), C, options if options is not None else SMALL[name])


def _snapshot(batch: Batch) -> dict:
    return {m: [None if t is None else t.clone() for t in (x.pooled, x.tokens, x.mask)]
            for m, x in batch.inputs.items()}


def _assert_unchanged(batch: Batch, snap: dict) -> None:
    assert batch.missing == {}
    for m, x in batch.inputs.items():
        for before, now in zip(snap[m], (x.pooled, x.tokens, x.mask)):
            assert (before is None and now is None) or torch.equal(before, now)


# -- each head's missing input ------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["text", "image"])
@pytest.mark.parametrize("name", ALL)
def test_every_head_scores_and_trains_with_a_side_missing(name, side):
    """Finite logits, loss and gradients; the batch given is not changed; `missing` records the dropped rows of
    every key of the side; the other rows score as before (every head is row-independent in eval)."""
    head, data = _head(name), make_data(B, seed=3)
    snap = _snapshot(data)
    dropped = head.drop_modalities(data, {side: EVERY_OTHER})
    _assert_unchanged(data, snap)
    assert set(dropped.missing) == {m for m in data.inputs if modality_side(m) == side}
    assert all(torch.equal(rows, EVERY_OTHER) for rows in dropped.missing.values())
    if dropped.inputs[side].mask is not None:  # a missing text keeps one real (zero) token
        assert (dropped.inputs[side].mask[EVERY_OTHER].sum(1) == 1).all()

    head.train()
    loss, terms = head.loss(head(dropped), dropped)
    loss.backward()
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in terms.values())
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)

    head.eval()
    with torch.no_grad(), head.logits_only():
        full, part = head(data).logits, head(dropped).logits
    assert torch.isfinite(part).all()
    torch.testing.assert_close(part[~EVERY_OTHER], full[~EVERY_OTHER], rtol=0, atol=1e-6)
    reads = HEADS[name].modalities or ("text", "image")
    assert torch.equal(part[EVERY_OTHER], full[EVERY_OTHER]) == (side not in reads)


def test_infig_drops_every_key_of_a_side_clip_and_hidden_layers_included():
    frozen = (("text@-2", 12), ("image@-2", 7))
    torch.manual_seed(0)
    head = create_head("infig", infig_spec(clip=True, frozen=frozen), 3, {**INFIG_TINY, "stack_layers": 1,
                                                                         "hfam_layers": 3})
    batch = infig_batch(clip=True, frozen=frozen)
    rows = torch.tensor([True, False, True, False, False, True])
    for side in ("text", "image"):
        dropped = head.drop_modalities(batch, {side: rows})
        assert set(dropped.missing) == {side, f"clip_{side}", f"{side}@-2"}
        assert all((dropped.inputs[m].pooled[rows] == 0).all() for m in dropped.missing)
        head.train()
        loss, _ = head.loss(head(dropped), dropped)
        loss.backward()
        assert torch.isfinite(loss)
        head.eval()
        with torch.no_grad(), head.logits_only():
            full, part = head(batch).logits, head(dropped).logits
        torch.testing.assert_close(part[~rows], full[~rows], rtol=0, atol=1e-6)


def test_infig_aligns_only_the_rows_with_both_sides():
    """GAM and HFAM align image-text pairs: a row with a side missing is neither a positive nor a queued key."""
    torch.manual_seed(0)
    head = create_head("infig", infig_spec(), 3, INFIG_TINY).train()
    batch = infig_batch(b=6)
    rows = torch.tensor([True, False, True, False, False, True])
    dropped = head.drop_modalities(batch, {"image": rows})
    out = head(dropped)
    head.optimizer_stepped()
    assert int(head.queue_len) == int((~rows).sum())  # only the pairs' keys are queued
    torch.testing.assert_close(head.queue_image[:3], out.aux["key_image"][~rows])
    assert torch.isfinite(out.aux["loss_gam"]) and torch.isfinite(out.aux["loss_hfam"])
    everything = head.drop_modalities(batch, {"image": torch.ones(6, dtype=torch.bool)})
    out = head(everything)
    head.optimizer_stepped()
    assert float(out.aux["loss_gam"].detach()) == 0.0 and float(out.aux["loss_hfam"].detach()) == 0.0
    assert int(head.queue_len) == 3


def test_mdse_contrasts_no_stand_in_embedding():
    head, data = _head("mdse"), make_data(B, seed=4)
    dropped = head.drop_modalities(data, {"text": EVERY_OTHER})
    embs, labels = head.macl_set(head(dropped), dropped)
    image, text, fused = labels.split(B)
    assert (text[EVERY_OTHER] == -1).all() and torch.equal(text[~EVERY_OTHER], data.labels[~EVERY_OTHER])
    assert torch.equal(image, data.labels) and torch.equal(fused, data.labels)


def test_late_fusion_averages_the_present_modalities_only():
    head, data = _head("late"), make_data(B, seed=5)
    dropped = head.drop_modalities(data, {"text": EVERY_OTHER})
    head.eval()
    with torch.no_grad():
        out = head(dropped)
        image_alone = torch.log_softmax(out.aux["logits"]["image"], -1)
        both = head(data).logits
    torch.testing.assert_close(out.logits[EVERY_OTHER], image_alone[EVERY_OTHER])
    assert torch.equal(out.logits[~EVERY_OTHER], both[~EVERY_OTHER])
    # the text classifier's CE counts only the rows where text is there
    _, terms = head.loss(out, dropped)
    from msa_cache.heads.base import masked_ce

    kept = dropped.labels.masked_fill(EVERY_OTHER, -1)
    assert terms["ce_text"] == pytest.approx(float(masked_ce(out.aux["logits"]["text"], kept)))
    assert terms["ce_image"] == pytest.approx(float(masked_ce(out.aux["logits"]["image"], dropped.labels)))


def test_late_fusion_with_every_modality_missing_averages_them_all():
    """Never made by drop_modalities (one side stays), but a hand-made batch gets finite logits: the stand-ins'
    average, as a row with nothing missing computes it."""
    head, data = _head("late"), make_data(B, seed=5)
    gone = head.drop_modalities(data, {"text": EVERY_OTHER, "image": EVERY_OTHER})
    plain = Batch(gone.inputs, gone.labels)
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(gone).logits, head(plain).logits)


def test_probe_stands_in_the_train_mean_and_fits_the_expected_dropout_loss():
    from sklearn.linear_model import LogisticRegression

    train, dev = make_data(120, seed=0), make_data(60, seed=1)
    np_x = lambda b: {m: x.pooled.numpy() for m, x in b.inputs.items()}  # noqa: E731
    acc = lambda y, p: float((y == p).mean())  # noqa: E731
    plain = _head("probe", options={"c_grid": "1"})
    plain.fit_closed_form(np_x(train), train.labels.numpy(), np_x(dev), dev.labels.numpy(), acc)
    dropped = plain.drop_modalities(dev, {"image": EVERY_OTHER.repeat(8)[:60]})
    rows = dropped.missing["image"]
    image_cols = plain.columns["image"]
    torch.testing.assert_close(dropped.inputs["image"].pooled[rows],
                               plain.mean[image_cols].expand(int(rows.sum()), -1))
    with torch.no_grad():  # the standardised image block is 0: only the text terms of W x̂ remain
        x = torch.cat([dropped.inputs[m].pooled for m in plain.mods], 1)
        xhat = (x - plain.mean) / plain.std
        assert xhat[rows][:, image_cols].abs().max() < 1e-5

    p = 0.3
    robust = _head("probe", options={"c_grid": "1"})
    robust.fit_closed_form(np_x(train), train.labels.numpy(), np_x(dev), dev.labels.numpy(), acc,
                           modality_dropout=p)
    xs = np.concatenate([train.inputs[m].pooled.numpy().astype(np.float64) for m in robust.mods], 1)
    xs = (xs - xs.mean(0)) / xs.std(0)
    copies, weights = [xs], [np.full(len(xs), 1 - p)]
    for side in ("text", "image"):
        c = xs.copy()
        c[:, robust.columns[side]] = 0.0
        copies.append(c)
        weights.append(np.full(len(xs), p / 2))
    ref = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(
        np.concatenate(copies), np.tile(train.labels.numpy(), 3), sample_weight=np.concatenate(weights))
    torch.testing.assert_close(robust.linear.weight, torch.as_tensor(ref.coef_, dtype=torch.float32))
    assert not torch.allclose(robust.linear.weight, plain.linear.weight)


def test_autoencoder_reconstructs_only_the_inputs_that_are_there():
    head, data = _head("ae-cat"), make_data(B, seed=2)
    dropped = head.drop_modalities(data, {"image": EVERY_OTHER})
    out = head(dropped)
    _, terms = head.loss(out, dropped)
    there = ~EVERY_OTHER
    expected = torch.nn.functional.mse_loss(out.aux["recon"]["image"][there], data.inputs["image"].pooled[there])
    assert terms["rec_image"] == pytest.approx(float(expected.detach()))


def test_heads_that_read_one_side_cannot_drop():
    assert _head("uni-text").droppable_sides() == () and _head("uni-image").droppable_sides() == ()
    assert _head("late").droppable_sides() == ("text", "image")
    batch = make_data(B, seed=0)
    assert ModalityDropout(_head("uni-text"), 0.5, 0)(batch) is batch


# -- the draw -----------------------------------------------------------------------------------------------

def test_the_draw_drops_one_side_at_rate_p_reproducibly():
    head = _head("late")
    a, b, other = (ModalityDropout(head, 0.3, s) for s in (7, 7, 8))
    rows_a = [a.rows(1000) for _ in range(3)]
    rows_b = [b.rows(1000) for _ in range(3)]
    assert all(torch.equal(x[k], y[k]) for x, y in zip(rows_a, rows_b) for k in ("text", "image"))
    assert not torch.equal(rows_a[0]["text"], other.rows(1000)["text"])
    for r in rows_a:
        assert not (r["text"] & r["image"]).any()  # never both
        assert 0.25 < float((r["text"] | r["image"]).float().mean()) < 0.35
        assert 0.1 < float(r["text"].float().mean()) < 0.2
    with pytest.raises(ValueError, match="out of range"):
        ModalityDropout(head, 1.0, 0)


# -- the setting and the run identity ---------------------------------------------------------------------

def test_the_setting_enters_the_identity_only_when_set():
    assert config_hash(TrainConfig().identity()) == "c3107064f8"  # runs made before it keep their folders
    assert config_hash(TrainConfig(modality_dropout=0.0).identity()) == "c3107064f8"
    assert TrainConfig(modality_dropout=0.3).identity()["modality_dropout"] == 0.3
    spec = RunSpec("m.parquet", {}, "late", {}, TrainConfig())
    assert "modality_dropout" not in spec.to_dict()["train"]  # config.json reads as before
    with_p = RunSpec("m.parquet", {}, "late", {}, TrainConfig(modality_dropout=0.3))
    assert RunSpec.from_dict(with_p.to_dict()) == with_p and RunSpec.from_dict(spec.to_dict()) == spec
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="--modality-dropout"):
            TrainConfig(modality_dropout=bad)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("missing"))


def _spec(world, head, seed=0, **train):
    manifest, cache_root = world
    caches = {"text": str(cache_root / "toy" / "toytext"), "image": str(cache_root / "toy" / "toyimage")}
    return RunSpec(str(manifest), caches, head, {}, TrainConfig(**{"max_epochs": 3, "batch_size": 16, **train}), seed)


def _probs(run: Path) -> dict:
    table = pq.read_table(run / "predictions.parquet").to_pydict()
    return {k: v for k, v in table.items() if k.startswith("prob_")}


def test_a_dropout_run_is_its_own_reproducible_run(world, tmp_path):
    plain = fit_run(_spec(world, "late"), tmp_path / "a", log=lambda _: None)
    runs = [fit_run(_spec(world, "late", modality_dropout=0.3), tmp_path / root, log=lambda _: None)
            for root in ("a", "b")]
    assert runs[0].path.parent.name != plain.path.parent.name  # another folder, named by the setting
    assert "-md0.3-" in runs[0].path.parent.name and "-md" not in plain.path.parent.name
    assert runs[0].path.relative_to(tmp_path / "a") == runs[1].path.relative_to(tmp_path / "b")
    assert _probs(runs[0].path) == _probs(runs[1].path)  # the same seed draws the same rows
    assert _probs(runs[0].path) != _probs(plain.path)
    config = json.loads((runs[0].path / "config.json").read_text())
    assert config["spec"]["train"]["modality_dropout"] == 0.3
    assert "modality_dropout" not in json.loads((plain.path / "config.json").read_text())["spec"]["train"]
    assert "modality_dropout: 0.3" in (runs[0].path / "command.yaml").read_text()
    assert "modality_dropout" not in (plain.path / "command.yaml").read_text()
    assert "- modality dropout: 0.3 " in (runs[0].path / "README.md").read_text()  # the model card
    assert "modality dropout" not in (plain.path / "README.md").read_text()


def test_one_sided_heads_say_dropout_does_nothing_and_the_probe_changes(world, tmp_path):
    lines = []
    fit_run(_spec(world, "uni-text", modality_dropout=0.3), tmp_path, log=lines.append)
    assert any("uni-text: --modality-dropout does nothing here" in line for line in lines)
    plain = fit_run(_spec(world, "probe"), tmp_path, log=lambda _: None)
    robust = fit_run(_spec(world, "probe", modality_dropout=0.5), tmp_path, log=lambda _: None)
    assert plain.path != robust.path and _probs(plain.path) != _probs(robust.path)


def test_seeds_with_dropout_train_one_at_a_time_as_alone(world, tmp_path):
    specs = [_spec(world, "late", seed, modality_dropout=0.3) for seed in (0, 1)]
    assert spec_refusal(specs[0]) == "modality dropout trains seeds one at a time (each seed drops its own rows)"
    assert spec_refusal(_spec(world, "late")) is None
    lines = []
    together = fit_seeds(specs, tmp_path / "together", log=lines.append, batch=True)
    assert lines[0] == "late: training its 2 seeds one at a time: modality dropout trains seeds one at a time " \
                       "(each seed drops its own rows)"
    alone = fit_run(specs[1], tmp_path / "alone", log=lambda _: None)
    assert _probs(together[1].path) == _probs(alone.path)


def _cli(args):
    return CliRunner().invoke(cli, args)


def test_cli_refuses_p_out_of_range_in_one_line(world, tmp_path):
    manifest, cache_root = world
    for bad in ("1", "1.5", "-0.2"):
        r = _cli(["fit", "--manifest", str(manifest), "--cache-root", str(cache_root), "--head", "late",
                  "--runs", str(tmp_path), "--modality-dropout", bad])
        assert r.exit_code == 2
        assert len(r.output.strip().splitlines()) == 1 and "--modality-dropout" in r.output
    assert not any(tmp_path.iterdir())
    for command in ("fit", "compare", "tune"):
        assert "--modality-dropout" in _cli([command, "--help"]).output


def test_compare_cv_passes_it_through(world, tmp_path):
    manifest, cache_root = world
    common = ["compare", "--manifest", str(manifest), "--cache-root", str(cache_root), "--heads", "late,probe",
              "--seeds", "1", "--max-epochs", "2", "--cv", "2", "--runs", str(tmp_path)]
    r = _cli(common + ["--modality-dropout", "0.3"])
    assert r.exit_code == 0, r.output
    configs = sorted(tmp_path.rglob("fold-*/config.json"))
    assert len(configs) == 4
    assert all(json.loads(p.read_text())["spec"]["train"]["modality_dropout"] == 0.3 for p in configs)
    r = _cli(common)
    assert r.exit_code == 0, r.output
    assert len(sorted(tmp_path.rglob("fold-*/config.json"))) == 8  # P=0: other families, trained anew
