"""`compare --num-shards N --shard-index K`: N processes fill one runs/ folder with exactly
the runs of a one-process grid; the leaderboard comes from the shard that sees them all."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from msa_cache.partition import Partition, resolve_partition
from msa_cache.study.compare import compare, shard_grid
from msa_cache.fit.config import TrainConfig
from msa_cache_cli.main import main as cli
from pooled_world import make_world

GRID = ["--heads", "uni-text,ae-cat", "--latent", "8,16", "--seeds", "2", "--max-epochs", "2"]  # 3 cells x 2 seeds


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("shards"))


def _finished(runs: Path) -> set[str]:
    return {str(p.parent.relative_to(runs)) for p in runs.rglob("metrics.json")}


def test_shard_grid_parts_are_disjoint_and_cover_the_grid():
    items = list(range(11))
    parts = [shard_grid(items, 3, k) for k in range(3)]
    assert sorted(sum(parts, [])) == items and parts[0] == [0, 3, 6, 9]
    assert shard_grid(items, 1, 0) == items
    with pytest.raises(ValueError, match="shard index 3"):
        shard_grid(items, 3, 3)


def test_compare_defaults_its_shard_from_slurm_and_torchrun_variables():
    assert resolve_partition(env={"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "7",
                                  "SLURM_ARRAY_TASK_MIN": "5"}) == Partition(4, 2, "SLURM job array")
    assert resolve_partition(env={"WORLD_SIZE": "8", "RANK": "3"}).index == 3
    assert resolve_partition(env={}) == Partition()


def test_two_processes_make_the_runs_of_one_process(world, tmp_path):
    manifest, cache_root = world
    common = ["--manifest", str(manifest), "--cache-root", str(cache_root)]
    one = CliRunner().invoke(cli, ["compare", *GRID, *common, "--runs", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    procs = [subprocess.Popen([sys.executable, "-m", "msa_cache_cli.main", "compare", *GRID, *common,
                               "--runs", str(tmp_path / "two"), "--num-shards", "2", "--shard-index", str(k)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for k in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    assert _finished(tmp_path / "two") == _finished(tmp_path / "one") and len(_finished(tmp_path / "one")) == 6
    # each process trained its own half: 3 runs, none twice
    trained = [re.findall(r"seed (\d): .*\[\d+\.\ds\]", out) for out in outputs]
    assert [len(t) for t in trained] == [3, 3], outputs
    assert not list((tmp_path / "two").rglob("*.tmp-*"))
    # whichever shard finished last wrote the full leaderboard, identical to the one-process one
    board = (tmp_path / "two" / "toy" / "leaderboard.md").read_text()
    assert board == (tmp_path / "one" / "toy" / "leaderboard.md").read_text()
    assert board.count("| 2 |") == 6  # 3 families of 2 seeds, each with its seed-ensemble row


def test_a_shard_alone_trains_its_part_and_leaves_the_leaderboard(world, tmp_path):
    manifest, cache_root = world
    caches = {"text": cache_root / "toy/toytext", "image": cache_root / "toy/toyimage"}
    entries = compare(manifest, caches, ["uni-text", "ae-cat"], {"latent": [8]}, [0, 1], TrainConfig(max_epochs=1),
                      tmp_path, log=lambda m: None, partition=Partition(2, 1))
    assert sum(e.pending for e in entries) == 2 and sum(len(e.results) for e in entries) == 2
    common = ["--manifest", str(manifest), "--cache-root", str(cache_root), "--runs", str(tmp_path)]
    r = CliRunner().invoke(cli, ["compare", "--heads", "uni-text,ae-cat", "--latent", "8", "--seeds", "2",
                                 "--max-epochs", "1", "--num-shards", "2", "--shard-index", "1", *common])
    assert r.exit_code == 0 and "leaderboard not written: 2 grid run(s)" in r.output, r.output
    assert not (tmp_path / "toy" / "leaderboard.md").exists()
    r = CliRunner().invoke(cli, ["compare", "--heads", "uni-text,ae-cat", "--latent", "8", "--seeds", "2",
                                 "--max-epochs", "1", "--shard-index", "0", "--num-shards", "2", *common])
    assert r.exit_code == 0 and "another shard's, finished" in r.output, r.output
    assert (tmp_path / "toy" / "leaderboard.md").read_text().count("| 2 |") == 4  # 2 families + 2 seed ensembles
    assert not list((tmp_path / "toy").glob(".leaderboard.tmp-*"))
