"""A hostile user's inputs, table-driven: every bad invocation of the CLI must end in one line
(`error: ...` or click's usage error), a non-zero exit, no traceback, nothing written anywhere
(the whole temporary tree is snapshotted) and no run directory marked finished.

Each case gets a fresh copy of one tiny world: a manifest, a text and an image cache written by
the real extraction pipeline, one finished run, and a small image + CSV dataset for the manifest
builders. A case may first break something in its copy (edit the manifest, delete a shard,
tamper with the run), then runs the command. The count of cases is reported by
`test_hostile_count` (see the report in issue 13).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file
from click.testing import CliRunner
from PIL import Image

from msa_cache.fit.config import RunSpec, TrainConfig
from msa_cache.fit.trainer import fit_run
from msa_cache_cli.main import main as cli
from worlds import CLASSES, SMALL_N, extract_small, small_rows, write_small_manifest

N = SMALL_N


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The world every case copies: manifests/toy.parquet, cache/toy/{toytext,toyimage}, a finished run."""
    root = tmp_path_factory.mktemp("hostile-template")
    data = root / "data"
    (data / "img").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(data / "img" / f"{i}.png")
    (data / "posts.csv").write_text("id,text,image,label,split\n" + "".join(
        f"q{i},text {i},img/{i}.png,{CLASSES[i % 3]},{'train' if i < 2 else 'dev'}\n" for i in range(4)))
    manifest = write_small_manifest(root, "toy", small_rows())
    extract_small(root, manifest)
    spec = RunSpec(str(manifest), {"text": str(root / "cache/toy/toytext"), "image": str(root / "cache/toy/toyimage")},
                   "ae-cat", {"latent": 8}, TrainConfig(max_epochs=1, batch_size=16), 0)
    run = fit_run(spec, root / "runs", log=lambda m: None).path
    return root, run.relative_to(root)


# ---------------------------------------------------------------------------
# ways to break a copy of the world (each gets the copy's root and its run dir)


def edit_text(root, run):
    rows = small_rows()
    rows[3]["text"] = "an edited text"  # same ids, other content: the cache is stale
    write_small_manifest(root, "toy", rows)


def drop_shard(root, run):
    (root / "cache/toy/toytext/shard-00001.h5").unlink()


def break_index(root, run):
    (root / "cache/toy/toyimage/index.json").write_text("{not json")


def _index(root, change):
    path = root / "cache/toy/toytext/index.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def index_escaping_shard(root, run):
    (root / "secret.h5").write_bytes((root / "cache/toy/toytext/shard-00000.h5").read_bytes())

    def change(index):
        index["shards"][0]["file"] = "../../../secret.h5"
        return index
    _index(root, change)


def index_not_object(root, run):
    _index(root, lambda index: [index])


def index_no_attrs(root, run):
    _index(root, lambda index: {k: v for k, v in index.items() if k != "attrs"})


def index_rows_mismatch(root, run):
    def change(index):
        index["num_rows"] = 10 ** 9
        return index
    _index(root, change)


def one_class_world(root, run):
    """A second manifest whose train split holds one class, with its own (matching) caches."""
    rows = small_rows(labels=[0] * N)
    rows[35]["label"] = 1  # dev has two classes; train only one
    extract_small(root, write_small_manifest(root, "mono", rows))


def dotted_manifest(root, run):
    shutil.copy(root / "manifests/toy.parquet", root / "manifests/...parquet")


def not_parquet(root, run):
    (root / "manifests/bad.parquet").write_text("hello")


def _with_meta(root, raw: bytes | None):
    table = pq.read_table(root / "manifests/toy.parquet")
    table = table.replace_schema_metadata(None if raw is None else {b"msa_cache": raw})
    pq.write_table(table, root / "manifests/meta.parquet")


def meta_missing(root, run):
    _with_meta(root, None)


def meta_not_json(root, run):
    _with_meta(root, b"{oops")


def meta_missing_keys(root, run):
    _with_meta(root, json.dumps({"dataset": "toy"}).encode())


def meta_bad_classes(root, run):
    _with_meta(root, json.dumps({"dataset": "toy", "classes": "abc", "root": "/", "builder": "x"}).encode())


def meta_not_object(root, run):
    _with_meta(root, b"[1, 2]")


def _config(root, run, change):
    path = root / run / "config.json"
    cfg = json.loads(path.read_text())
    cfg = change(cfg)
    path.write_text(json.dumps(cfg))


def cfg_list(root, run):
    _config(root, run, lambda c: [1, 2, 3])


def cfg_garbage(root, run):
    (root / run / "config.json").write_text("{{{")


def cfg_no_modalities(root, run):
    _config(root, run, lambda c: {k: v for k, v in c.items() if k != "modalities"})


def cfg_no_spec(root, run):
    _config(root, run, lambda c: {k: v for k, v in c.items() if k != "spec"})


def _set_in_config(name, *keys, value):
    """A tampering named `name` (the case id): config.json with one nested key set to `value`."""
    def tamper(root, run):
        def change(c):
            node = c
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
            return c
        _config(root, run, change)
    tamper.__name__ = name
    return tamper


cfg_huge_latent = _set_in_config("cfg_huge_latent", "spec", "head_options", "latent", value=10 ** 12)
cfg_string_latent = _set_in_config("cfg_string_latent", "spec", "head_options", "latent", value="64")
cfg_huge_dim = _set_in_config("cfg_huge_dim", "modalities", "text", "pooled_dim", value=10 ** 12)
cfg_unknown_head = _set_in_config("cfg_unknown_head", "spec", "head", value="nope")
cfg_fields_twice = _set_in_config("cfg_fields_twice", "caches", "text", "fields", value=["tokens", "tokens"])
cfg_head_huge = _set_in_config("cfg_head_huge", "spec", "head", value=[["x" * 100] * 100] * 100)


def cfg_modality_renamed(root, run):
    def change(c):
        c["caches"]["../../../../etc/passwd"] = c["caches"].pop("text")
        return c
    _config(root, run, change)


def _config_file(name, text):
    """A `--config` file, {root}/conf.yaml, holding `text` (the case id: name)."""
    def setup(root, run):
        (root / "conf.yaml").write_text(text)
    setup.__name__ = name
    return setup


def cfg_one_class(root, run):
    def change(c):
        c["classes"] = ["positive"]
        return c
    _config(root, run, change)


def cfg_other_dim(root, run):
    def change(c):  # plausible, but the weights in model.pt have another shape
        c["modalities"]["text"]["pooled_dim"] = 9
        return c
    _config(root, run, change)


def weights_wrong_shape(root, run):
    state = load_file(root / run / "model.safetensors")
    name = next(iter(state))
    state[name] = torch.zeros(3, 3, 3)
    save_file(state, root / run / "model.safetensors")


class Payload:
    """Pickled by reference: weights_only must refuse it (and it must never run)."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def weights_pickle(root, run):
    (root / run / "model.safetensors").unlink()  # an older run's pickle
    torch.save({"x": Payload()}, root / run / "model.pt")


def weights_garbage(root, run):
    (root / run / "model.safetensors").write_bytes(b"not a safetensors file")


def metrics_gone(root, run):
    (root / run / "metrics.json").unlink()


def metrics_list(root, run):
    (root / run / "metrics.json").write_text("[]")


def tmp_run_only(root, run):
    """Only an unfinished tmp folder (killed after metrics.json, before the rename) besides nothing else."""
    family = root / run.parent
    shutil.move(str(root / run), str(family / "seed-0.tmp-999999"))


def predictions_gone(root, run):
    (root / run / "predictions.parquet").unlink()


def empty_dir(root, run):
    (root / "empty").mkdir()


# --- round 3: files that could blow up memory, leak outside files or lose rows


def weights_nan(root, run):
    state = load_file(root / run / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, root / run / "model.safetensors")


def weights_float64(root, run):
    state = load_file(root / run / "model.safetensors")
    save_file({k: v.double() for k, v in state.items()}, root / run / "model.safetensors")


def metrics_deep(root, run):
    (root / run / "metrics.json").write_text("[" * 50_000 + "]" * 50_000)


def metrics_no_per_class(root, run):
    path = root / run / "metrics.json"
    metrics = json.loads(path.read_text())
    for split in metrics.values():
        split.pop("per_class", None)
    path.write_text(json.dumps(metrics))


def predictions_no_id(root, run):
    path = root / run / "predictions.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["id"]), path)


def _outside_file(root):
    (root / "secret.txt").write_text("a file outside the run\n")
    return root / "secret.txt"


def history_symlink(root, run):
    (root / run / "history.jsonl").unlink()
    (root / run / "history.jsonl").symlink_to(_outside_file(root))


def card_symlink(root, run):
    (root / run / "README.md").unlink()
    (root / run / "README.md").symlink_to(_outside_file(root))


def tensorboard_symlink(root, run):
    (root / run / "tensorboard").mkdir(exist_ok=True)
    (root / run / "tensorboard" / "events.out.tfevents.1").symlink_to(_outside_file(root))


def journal_cut_short(root, run):
    record = {"op_code": 0, "worker_id": "w-1", "study_name": "s", "directions": [1]}
    (root / "j.journal").write_text(json.dumps(record) + "\n" + json.dumps(record)[:40])


def journal_unknown_op(root, run):
    (root / "j.journal").write_text(json.dumps({"op_code": 0, "worker_id": "w-1", "study_name": "s",
                                                "directions": [1]}) + "\n"
                                    + json.dumps({"op_code": 99, "worker_id": "w-1"}) + "\n")


def csv_huge_field(root, run):
    (root / "data" / "big.csv").write_text("id,text,image,label,split\nq0,\"" + "x" * 200_000
                                           + "\",img/0.png,positive,train\n")


def encoder_pickle(root, run):
    """A local Hugging Face folder whose only weights are a pickle (torch's weights_only refuses it)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = root / "pickled-encoder"
    BertModel(BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).config.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                + [f"w{i}" for i in range(35)]))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.save({"x": Payload()}, folder / "pytorch_model.bin")



# ---------------------------------------------------------------------------
# the cases: (id, setup or None, argv); {m} manifest, {c} cache root, {r} runs root, {run} the run,
# {d} the data folder, {root} the copy's root

M = ["--manifest", "{m}", "--cache-root", "{c}", "--runs", "{r}"]
FIT = ["fit", "--head", "ae-cat", *M, "--max-epochs", "1"]
CMP = ["compare", "--heads", "ae-cat", *M, "--max-epochs", "1", "--seeds", "1"]
TABLE = ["manifest", "table", "--root", "{d}", "--file", "posts.csv"]
CONF = ["--config", "{root}/conf.yaml"]

CASES = [
    # class 1: stale results
    ("fit-stale-text", edit_text, FIT),
    ("compare-stale-text", edit_text, CMP),
    ("all-runs-counts-no-tmp", tmp_run_only, ["compare", "--heads", "", "--all-runs", *M]),
    # class 2: paths
    ("manifest-name-dotdot", None, [*TABLE, "--name", "../../escaped"]),
    ("manifest-name-slash", None, [*TABLE, "--name", "a/b"]),
    ("manifest-name-dot", None, [*TABLE, "--name", "."]),
    ("manifest-name-empty", None, [*TABLE, "--name", ""]),
    ("manifest-output-dotdot-stem", None, [*TABLE, "-o", "{root}/manifests/...parquet"]),
    ("extract-dotdot-manifest", dotted_manifest,
     ["extract", "--manifest", "{root}/manifests/...parquet", "--encoder", "minilm", "--out", "{c}"]),
    ("fit-dotdot-manifest", dotted_manifest, [*FIT[:3], "--manifest", "{root}/manifests/...parquet", *M[2:]]),
    ("info-dotdot-manifest", dotted_manifest, ["manifest", "info", "{root}/manifests/...parquet"]),
    ("fit-text-cache-dotdot", None, [*FIT, "--text-cache", ".."]),
    ("fit-text-cache-slash", None, [*FIT, "--text-cache", "../toy/toytext"]),
    ("fit-image-cache-empty", None, [*FIT, "--image-cache", ""]),
    ("fit-image-cache-missing", None, [*FIT, "--image-cache", "nope"]),
    # class 4: options
    ("fit-batch-size-neg", None, [*FIT, "--batch-size", "-1"]),
    ("fit-batch-size-zero", None, [*FIT, "--batch-size", "0"]),
    ("fit-max-epochs-zero", None, [*FIT[:-2], "--max-epochs", "0"]),
    ("fit-max-epochs-neg", None, [*FIT[:-2], "--max-epochs", "-3"]),
    ("fit-patience-neg", None, [*FIT, "--patience", "-1"]),
    ("fit-latent-neg", None, [*FIT, "--latent", "-5"]),
    ("fit-latent-zero", None, [*FIT, "--latent", "0"]),
    ("fit-latent-huge", None, [*FIT, "--latent", str(10 ** 12)]),
    ("fit-latent-text", None, [*FIT, "--latent", "big"]),
    ("fit-lr-zero", None, [*FIT, "--lr", "0"]),
    ("fit-lr-nan", None, [*FIT, "--lr", "nan"]),
    ("fit-weight-decay-neg", None, [*FIT, "--weight-decay", "-1"]),
    ("fit-workers-neg", None, [*FIT, "--workers", "-1"]),
    ("fit-dropout-above-1", None, [*FIT, "--dropout", "1.5"]),
    ("fit-dropout-neg", None, [*FIT, "--dropout", "-0.1"]),
    ("fit-hidden-zero", None, ["fit", "--head", "late", *M, "--hidden", "0"]),
    ("fit-mha-width-zero", None, ["fit", "--head", "mha", *M, "--width", "0"]),
    ("fit-mha-heads-indivisible", None, ["fit", "--head", "mha", *M, "--width", "10", "--num-heads", "3",
                                         "--max-epochs", "1"]),
    ("fit-infig-gam-layer", None, ["fit", "--head", "infig", *M, "--gam-layer", "1000"]),
    ("fit-mdse-tau-zero", None, ["fit", "--head", "mdse", *M, "--tau", "0"]),
    ("fit-option-of-other-head", None, ["fit", "--head", "uni-text", *M, "--latent", "8"]),
    ("fit-unknown-head", None, ["fit", "--head", "nope", *M]),
    ("fit-seed-neg", None, [*FIT, "--seed", "-1"]),
    ("fit-text-pool-bad", None, [*FIT, "--text-pool", "max"]),
    ("fit-monitor-bad", None, [*FIT, "--monitor", "loss"]),
    ("fit-missing-manifest", None, ["fit", "--head", "ae-cat", "--manifest", "{root}/nope.parquet",
                                    "--cache-root", "{c}", "--runs", "{r}"]),
    ("fit-manifest-not-parquet", not_parquet, ["fit", "--head", "ae-cat", "--manifest", "{root}/manifests/bad.parquet",
                                               "--cache-root", "{c}", "--runs", "{r}"]),
    ("fit-no-cache-root", None, ["fit", "--head", "ae-cat", "--manifest", "{m}", "--cache-root", "{root}/nocache",
                                 "--runs", "{r}"]),
    ("fit-missing-shard", drop_shard, FIT),
    ("fit-broken-index", break_index, FIT),
    *[(f"{cmd}-{fn.__name__}", fn, argv) for fn in (index_escaping_shard, index_not_object, index_no_attrs,
                                                      index_rows_mismatch)
      for cmd, argv in (("fit", FIT), ("cache-info", ["cache", "info", "{c}"]))],
    ("fit-one-class", one_class_world, ["fit", "--head", "ae-cat", "--manifest", "{root}/manifests/mono.parquet",
                                        "--cache-root", "{c}", "--runs", "{r}", "--max-epochs", "1"]),
    ("compare-seeds-zero", None, [*CMP[:-2], "--seeds", "0"]),
    ("compare-seeds-neg", None, [*CMP[:-2], "--seeds", "-2"]),
    ("compare-unknown-head", None, ["compare", "--heads", "ae-cat,nope", *M]),
    ("compare-latent-text", None, [*CMP, "--latent", "8,big"]),
    ("compare-latent-zero", None, [*CMP, "--latent", "0,8"]),
    ("compare-latent-empty", None, [*CMP, "--latent", ","]),
    ("compare-dropout-bad", None, [*CMP, "--dropout", "0.1,2"]),
    ("compare-nothing", None, ["compare", "--heads", "", *M]),
    ("compare-batch-size-zero", None, [*CMP, "--batch-size", "0"]),
    *[(f"finetune-{flag.strip('-')}-{value}", None, ["finetune", "--head", "late", "--encoder", "minilm",
                                                   "--encoder", "efficientnet-lite0", "--manifest", "{m}",
                                                   "--runs", "{r}", flag, value])
      for flag, value in (("--lr", "0"), ("--encoder-lr", "-1"), ("--warmup", "1"), ("--batch-size", "0"),
                          ("--max-epochs", "0"), ("--seed", "-1"), ("--latent", "0"), ("--dropout", "3"))],
    ("finetune-one-class", one_class_world, ["finetune", "--head", "late", "--encoder", "minilm", "--encoder",
                                             "efficientnet-lite0", "--manifest", "{root}/manifests/mono.parquet",
                                             "--runs", "{r}", "--max-epochs", "1"]),
    ("manifest-info-not-parquet", not_parquet, ["manifest", "info", "{root}/manifests/bad.parquet"]),
    ("manifest-info-missing", None, ["manifest", "info", "{root}/manifests/nope.parquet"]),
    ("manifest-info-no-meta", meta_missing, ["manifest", "info", "{root}/manifests/meta.parquet"]),
    ("manifest-info-meta-not-json", meta_not_json, ["manifest", "info", "{root}/manifests/meta.parquet"]),
    ("manifest-info-meta-missing-keys", meta_missing_keys, ["manifest", "info", "{root}/manifests/meta.parquet"]),
    ("manifest-info-meta-bad-classes", meta_bad_classes, ["manifest", "info", "{root}/manifests/meta.parquet"]),
    ("manifest-info-meta-not-object", meta_not_object, ["manifest", "info", "{root}/manifests/meta.parquet"]),
    ("fit-meta-missing-keys", meta_missing_keys, ["fit", "--head", "ae-cat", "--manifest",
                                                  "{root}/manifests/meta.parquet", "--cache-root", "{c}", "--runs", "{r}"]),
    ("manifest-table-missing-file", None, ["manifest", "table", "--root", "{d}", "--file", "nope.csv"]),
    ("manifest-table-split-text", None, [*TABLE, "--split", "a/b/c", "--split-col", "nosplit"]),
    ("manifest-table-split-zero", None, [*TABLE, "--split", "0/0/0", "--split-col", "nosplit"]),
    ("manifest-table-split-given-twice", None, [*TABLE, "--split", "80/10/10"]),
    ("manifest-table-bad-column", None, [*TABLE, "--text-col", "nope"]),
    ("manifest-root-missing", None, ["manifest", "clmlf", "--root", "{root}/nodata"]),
    ("extract-unknown-encoder", None, ["extract", "--manifest", "{m}", "--encoder", "nope-enc", "--out", "{c}"]),
    ("extract-batch-size-zero", None, ["extract", "--manifest", "{m}", "--encoder", "minilm", "--batch-size", "0"]),
    ("extract-max-length-one", None, ["extract", "--manifest", "{m}", "--encoder", "minilm", "--max-length", "1"]),
    ("extract-layers-text", None, ["extract", "--manifest", "{m}", "--encoder", "minilm", "--layers", "a,b"]),
    ("extract-not-a-manifest", not_parquet, ["extract", "--manifest", "{root}/manifests/bad.parquet",
                                             "--encoder", "minilm", "--out", "{c}"]),
    ("cache-info-not-a-cache", empty_dir, ["cache", "info", "{root}/empty"]),
    ("cache-info-missing", None, ["cache", "info", "{root}/nope"]),
    ("cache-info-broken-index", break_index, ["cache", "info", "{c}/toy/toyimage"]),
    ("cache-verify-not-a-cache", empty_dir, ["cache", "verify", "{root}/empty"]),
    ("cache-verify-stale-manifest", edit_text, ["cache", "verify", "{c}", "--manifest", "{m}", "--quick"]),
    ("cache-verify-missing-shard", drop_shard, ["cache", "verify", "{c}"]),
    # tampered run directories (predict / explain / analyze all validate through train/rundir.py)
    *[(f"{cmd[0]}-{fn.__name__}", fn, cmd[1]) for fn in (
        cfg_list, cfg_garbage, cfg_no_modalities, cfg_no_spec, cfg_huge_latent, cfg_string_latent, cfg_huge_dim,
        cfg_unknown_head, cfg_one_class, cfg_other_dim, weights_wrong_shape, weights_pickle, weights_garbage,
        metrics_gone, metrics_list)
      for cmd in (("predict", ["predict", "{run}", "--text", "hi", "--image", "{d}/img/0.png"]),
                  ("explain", ["explain", "{run}", "--id", "p0", "-o", "{root}/out.png"]),
                  ("export", ["export", "{run}", "{root}/exported"]),
                  ("card", ["card", "{run}"]))],
    ("oracle-tampered-config", cfg_list, ["analyze", "oracle", "--text-run", "{run}", "--image-run", "{run}"]),
    ("oracle-no-predictions", predictions_gone, ["analyze", "oracle", "--text-run", "{run}", "--image-run", "{run}"]),
    ("oracle-unfinished", metrics_gone, ["analyze", "oracle", "--text-run", "{run}", "--image-run", "{run}"]),
    # report: a folder that is not one manifest's finished runs, a tampered run, bad options
    ("report-missing", None, ["report", "{root}/runs/nope"]),
    ("report-empty-folder", empty_dir, ["report", "{root}/empty"]),
    ("report-runs-root", None, ["report", "{r}"]),
    ("report-only-unfinished", tmp_run_only, ["report", "{r}/toy"]),
    *[(f"report-{fn.__name__}", fn, ["report", "{r}/toy"]) for fn in (cfg_list, cfg_garbage, cfg_no_spec, metrics_list)],
    ("report-out-is-folder", None, ["report", "{r}/toy", "-o", "{root}"]),
    ("report-monitor-bad", None, ["report", "{r}/toy", "--monitor", "loss"]),
    ("report-resamples-zero", None, ["report", "{r}/toy", "--resamples", "0"]),
    ("report-explain-neg", None, ["report", "{r}/toy", "--explain", "-1"]),
    ("predict-tmp-folder", tmp_run_only, ["predict", "{family}/seed-0.tmp-999999", "--text", "hi"]),
    ("predict-missing-run", None, ["predict", "{root}/runs/nope", "--text", "hi"]),
    ("export-into-a-non-empty-folder", None, ["export", "{run}", "{d}"]),
    ("export-bad-hub-repo", None, ["export", "{run}", "{root}/exported", "--push", "a b//c"]),
    ("export-tmp-folder", tmp_run_only, ["export", "{family}/seed-0.tmp-999999", "{root}/exported"]),
    ("unknown-command", None, ["frobnicate"]),
    # round 3: memory, files from outside, lost rows, damaged journals, smaller ones
    *[(f"{cmd[0]}-{fn.__name__}", fn, cmd[1]) for fn in (
        weights_nan, weights_float64, metrics_deep, cfg_fields_twice, cfg_modality_renamed, cfg_head_huge)
      for cmd in (("predict", ["predict", "{run}", "--text", "hi", "--image", "{d}/img/0.png"]),
                  ("export", ["export", "{run}", "{root}/exported"]),
                  ("card", ["card", "{run}"]))],
    *[(f"export-{fn.__name__}", fn, ["export", "{run}", "{root}/exported"])
      for fn in (history_symlink, card_symlink, tensorboard_symlink)],
    ("export-into-the-run", None, ["export", "{run}", "{run}/inner"]),
    *[(f"report-{fn.__name__}", fn, ["report", "{r}/toy"])
      for fn in (metrics_deep, metrics_no_per_class, predictions_no_id)],
    ("oracle-predictions-no-id", predictions_no_id, ["analyze", "oracle", "--text-run", "{run}", "--image-run", "{run}"]),
    ("report-resamples-huge", None, ["report", "{r}/toy", "--resamples", str(10 ** 9)]),
    ("compare-resamples-huge", None, [*CMP, "--resamples", str(10 ** 9)]),
    ("compare-seeds-huge", None, [*CMP[:-2], "--seeds", str(10 ** 12)]),
    ("fit-cv-neg", None, [*FIT, "--cv", "-3"]),
    ("fit-cv-one", None, [*FIT, "--cv", "1"]),
    ("fit-cv-huge", None, [*FIT, "--cv", str(10 ** 12)]),
    ("fit-cv-seed-neg", None, [*FIT, "--cv", "3", "--cv-seed", "-1"]),
    *[(f"tune-{fn.__name__}", fn, ["tune", "--head", "ae-cat", *M, "--trials", "1", "--max-epochs", "1",
                                   "--storage", "{root}/j.journal"]) for fn in (journal_cut_short, journal_unknown_op)],
    ("manifest-table-csv-huge-field", csv_huge_field, ["manifest", "table", "--root", "{d}", "--file", "big.csv",
                                                       "-o", "{root}/manifests/big.parquet"]),
    ("extract-pickled-encoder", encoder_pickle, ["extract", "--manifest", "{m}", "--encoder", "{root}/pickled-encoder",
                                                 "--out", "{c}"]),
    # --config files (cli/config_file.py): read and checked before any work
    *[(f"fit-{fn.__name__}", fn, [*FIT, *CONF]) for fn in (
        _config_file("config_unknown_key", "latnt: 8\n"),
        _config_file("config_bad_value", "max_epochs: -1\n"),
        _config_file("config_wrong_type", "lr: fast\n"),
        _config_file("config_list_for_one_value", "lr: [0.1, 0.2]\n"),
        _config_file("config_mapping_value", "latent: {a: 1}\n"),
        _config_file("config_key_twice", "max_epochs: 1\nmax-epochs: 2\n"),
        _config_file("config_not_mapping", "- 1\n- 2\n"),
        _config_file("config_garbage", "head: [ae-cat\n"),
        _config_file("config_empty", ""),
        _config_file("config_head_unknown", "head: nope\n"))],
    *[(f"fit-{fn.__name__}", fn, [*FIT, *CONF]) for fn in (
        _config_file("config_bool_for_int", "max_epochs: true\n"),
        _config_file("config_float_for_int", "max_epochs: 1.9\n"),
        _config_file("config_bool_for_float", "lr: false\n"),
        _config_file("config_yaml_key_twice", "max_epochs: 1\nmax_epochs: 2\n"),
        _config_file("config_nested_list", "head: [[ae-cat]]\n"),
        _config_file("config_nested_seed", "seed: [[1], 2]\n"),
        _config_file("config_nested_deep", "lr: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        _config_file("config_alias_cycle", "a: &a [*a]\n"),
        _config_file("config_long_alias_chain", "l0: &l0 [x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}]\n"
                                                                          for i in range(1, 300))),
        _config_file("config_huge_unknown_key", "x" * 1_000_000 + ": 1\n"),
        _config_file("config_huge_value", "head: " + "y" * 1_000_000 + "\n"))],
    ("fit-config-dev-zero", None, [*FIT, "--config", "/dev/zero"]),
    ("fit-config-missing", None, [*FIT, "--config", "{root}/nope.yaml"]),
    ("compare-config-seeds-zero", _config_file("seeds_zero", "heads: [ae-cat]\nseeds: 0\n"), ["compare", *CONF, *M]),
    ("extract-config-unknown-key", _config_file("encoders", "encoders_: [minilm]\n"), ["extract", *CONF]),
    ("tune-config-trials-zero", _config_file("trials", "head: ae-cat\ntrials: 0\n"), ["tune", *CONF, "--dry-run"]),
    ("finetune-config-of-a-fit-run", None, ["finetune", "--config", "{run}/config.json"]),
    *[(f"fit-config-run-{fn.__name__}", fn, ["fit", "--config", "{run}/config.json"])
      for fn in (cfg_list, cfg_garbage, cfg_no_modalities, cfg_unknown_head, cfg_huge_latent)],
]


def _snapshot(top: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(top))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _finished_runs(root: Path) -> set[str]:
    return {str(p.parent.relative_to(root)) for p in root.glob("runs/**/metrics.json")
            if p.parent.name.startswith("seed-") and ".tmp-" not in p.parent.name}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_cleanly(template, tmp_path, monkeypatch, case):
    name, setup, argv = case
    src, run = template
    top = tmp_path
    root = tmp_path / "a" / "b" / "world"  # deep enough that '../..' stays inside the snapshot
    shutil.copytree(src, root)
    (root / "cwd").mkdir()
    monkeypatch.chdir(root / "cwd")
    if setup is not None:
        setup(root, run)
    finished_before = _finished_runs(root)
    before = _snapshot(top)
    values = {"m": root / "manifests/toy.parquet", "c": root / "cache", "r": root / "runs", "run": root / run,
              "d": root / "data", "root": root, "family": root / run.parent}
    args = [a.format(**values) for a in argv]
    monkeypatch.delenv("MSA_CACHE_DEBUG", raising=False)
    result = CliRunner().invoke(cli, args)
    output = result.output
    assert result.exit_code != 0, f"{name}: exit 0\n{output}"
    assert "Traceback" not in output, f"{name}: traceback\n{output}"
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"{name}: {result.exception!r}"
    lines = [line for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    print(f"[{result.exit_code}] {name}: {last}")  # shown with -s: the message each case gets
    assert last.startswith(("error: ", "Error: ")) or "problem:" in output or "FAILED" in output, \
        f"{name}: no one-line error\n{output}"
    assert "weights_only=False" not in output
    after = _snapshot(top)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                     and not (before.get(k, (True,))[0] and after.get(k, (True,))[0] and k in before and k in after))
    assert not changed, f"{name}: wrote {changed[:5]}"
    assert _finished_runs(root) == finished_before
    assert not (root / "cwd" / "PWNED").exists()


def test_hostile_count():
    """How many bad inputs the table tries (the number quoted in the report)."""
    print(f"{len(CASES)} bad invocations")
    assert len(CASES) >= 80
