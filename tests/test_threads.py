"""The thread policy's decisions (msa_cache/threads.py): what each kind of work gets, --threads, the
user's OMP/MKL variables, and that commands apply and accept it. Decisions only; timings are in
bench/threads.py."""
from __future__ import annotations

import pytest

from msa_cache import threads
from msa_cache.heads import HEADS


def test_small_work_gets_one_thread_and_large_work_the_cores_capped():
    assert threads.decide("small", env={}, cores=16) == 1
    assert threads.decide("large", env={}, cores=4) == 4
    assert threads.decide("large", env={}, cores=64) == threads.MAX_THREADS == 8
    assert threads.decide("large", env={}, cores=1) == 1


def test_threads_flag_wins_and_user_variables_leave_torch_alone():
    assert threads.decide("small", requested=3, env={"OMP_NUM_THREADS": "2"}, cores=16) == 3
    assert threads.decide("large", requested=2, env={}, cores=16) == 2
    for var in threads.USER_VARIABLES:
        assert threads.decide("small", env={var: "4"}, cores=16) is None
        assert threads.decide("large", env={var: "4"}, cores=16) is None
    assert threads.decide("large", env={"OMP_NUM_THREADS": " "}, cores=2) == 2  # blank is unset


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="work 'huge'"):
        threads.decide("huge", env={})
    with pytest.raises(ValueError, match="--threads 0"):
        threads.decide("small", requested=0, env={})


def test_available_cores_follow_the_affinity_mask():
    assert 1 <= threads.available_cores()


def test_every_head_names_its_kind_of_work():
    assert {entry.compute for entry in HEADS.values()} <= set(threads.WORK)
    assert not any(HEADS[h].compute == "large" for h in HEADS if not HEADS[h].uses_tokens)  # pooled: small
    assert {h for h, e in HEADS.items() if e.compute == "large"} == {"mdse", "infig"}


def test_use_sets_torch_and_respects_the_request(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    try:
        threads.request(None)
        assert threads.use("small") == 1 and torch.get_num_threads() == 1
        threads.request(2)
        assert threads.use("small") == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        threads.request(None)
        torch.set_num_threads(3)
        assert threads.use("large") is None and torch.get_num_threads() == 3  # left alone
    finally:
        threads.request(None)
        torch.set_num_threads(before)


def test_compute_commands_take_threads_and_config_files_accept_it(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from msa_cache_cli.main import main

    for cmd in ("extract", "fit", "compare", "tune", "finetune", "predict", "demo"):
        out = CliRunner().invoke(main, [cmd, "--help"])
        assert out.exit_code == 0 and "--threads" in out.output, cmd
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("threads: 2\nheads: ''\n")
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)  # no manifests/ here
    out = runner.invoke(main, ["compare", "--config", str(cfg)])
    assert out.exit_code == 2 and "no manifest in manifests/" in out.output  # past the options: threads taken
    out = runner.invoke(main, ["compare", "--config", str(cfg), "--threads", "0"])
    assert out.exit_code == 2 and "--threads" in out.output  # the option's own range check
    bad = tmp_path / "bad.yaml"
    bad.write_text("threads: 0\n")
    out = CliRunner().invoke(main, ["fit", "--config", str(bad), "--head", "late"])
    assert out.exit_code == 2 and "threads" in out.output
