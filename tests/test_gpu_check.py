"""bench/gpu_check.py: its --cpu-dry-run runs every section's code path at tiny sizes, so the GPU
script cannot rot between the rare GPU windows (issue 19)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

SECTIONS = ("extract", "heads", "finetune", "oom")


def _numbers(x):
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run through bench/gpu_check.sh (the command a GPU session runs), generated data."""
    out = tmp_path_factory.mktemp("gpu-check-out")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OUT"}
    env.update(PYTHON=sys.executable, MSA_BENCH_DIR=str(tmp_path_factory.mktemp("bench-scratch")))
    # A generous budget: on a loaded shared CPU the default 55 s guard could skip items, which this test
    # must not mistake for rot. Unloaded, the dry run takes well under a minute.
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--cpu-dry-run", "--out", str(out),
                           "--budget-s", "140"], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_dry_run_writes_every_section(dry_run):
    out, data, md = dry_run
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    assert data["mode"] == "cpu-dry-run" and data["data"]["source"] == "generated" and data["data"]["rows"] == 32
    assert data["machine"]["torch"] == torch.__version__ and "gpu" in data["machine"]
    for name in SECTIONS:
        sec = data["sections"][name]
        assert sec["status"] == "ok", (name, [r["status"] for r in sec["rows"]])
        assert sec["rows"] and all(r["status"] == "ok" for r in sec["rows"])
        assert f"## {sec['title']}" in md
    assert all(math.isfinite(x) for x in _numbers(data))
    assert data["wall_s"] < data["budget_s"]


def test_dry_run_extraction_rows(dry_run):
    _, data, _ = dry_run
    rows = data["sections"]["extract"]["rows"]
    main = {(r["encoder"], r["batch"]): r for r in rows if r["kind"] == "b-vs-c"}
    assert set(main) == {("vit", 4), ("vit", 16), ("bert", 4), ("bert", 16), ("resnet50", 16), ("clip", 16)}
    for r in main.values():
        assert r["b_per_s"] > 0 and r["c_per_s"] > 0 and r["c_over_b"] == pytest.approx(r["c_per_s"] / r["b_per_s"])
        assert r["cpu_ms_per_sample"] > 0 and r["kib_per_row"] > 0
    assert [r["workers"] for r in rows if r["kind"] == "workers"] == [0, 1]


def test_dry_run_has_a_row_for_every_head(dry_run):
    from msa_cache.heads import HEADS

    _, data, md = dry_run
    rows = data["sections"]["heads"]["rows"]
    assert sorted({r["head"] for r in rows}) == sorted(HEADS)
    assert {r["config"] for r in rows if r["head"] in ("mdse", "infig")} >= {
        "default", "paper: width 64", "paper: width 64, fusion_layers 3"}
    table = [line for line in md.splitlines() if line.startswith("| ")]
    for name in HEADS:
        assert any(line.startswith(f"| {name} | default |") for line in table), name
    for r in rows:
        assert r["params"] > 0 and isinstance(r["fits_card"], bool) and isinstance(r["predict_big_fits_card"], bool)
        if r["head"] != "probe":
            assert r["fit_s_per_step"] > 0
        if not r["fits_card"]:  # the simulated cap: batch x parameters <= 2e7
            assert r["largest_batch"] == int(2e7 // r["params"]) < 8
    assert any(not r["fits_card"] for r in rows), "the binary search never ran"


def test_dry_run_finetune_and_oom_rows(dry_run):
    _, data, _ = dry_run
    ft = data["sections"]["finetune"]["rows"]
    assert {(r["head"], r["precision"], r["grad_checkpointing"]) for r in ft} >= {
        ("late", "fp32", False), ("late", "fp32", True), ("late", "fp16", True), ("infig", "fp32", True)}
    assert all(r["s_per_step"] > 0 and r["params"] > 0 for r in ft)
    oom = {r["what"]: r for r in data["sections"]["oom"]["rows"]}
    halving = oom["extract() batch halving"]
    assert [m.split(":")[0] for m in halving["halvings"]] == ["CUDA out of memory at batch size 8",
                                                              "CUDA out of memory at batch size 4"]
    assert halving["result"].startswith("halved 2x, all 32 rows written")
    assert oom["fine-tune step under the card cap"]["result"].startswith("out of memory")


def test_time_guard_skips_and_still_writes(tmp_path):
    import gpu_check_core as core

    rep = core.Report(tmp_path, core.DRY, core.Budget(0.0))
    sec = rep.section("heads", "2. heads", [])
    calls = []
    row = rep.item(sec, "x", lambda: calls.append(1) or {}, head="late", config="default")
    assert not calls and row["status"].startswith("skipped: time budget")
    failed = core.Report(tmp_path, core.DRY, core.Budget(100.0))
    sec = failed.section("heads", "2. heads", [])
    row = failed.item(sec, "y", lambda: 1 / 0, head="late", config="default")
    assert row["status"].startswith("error: ZeroDivisionError")
    failed.close_section(sec, 0.0)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "error: ZeroDivisionError" in md and json.loads((tmp_path / "gpu_check.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_without_cuda_it_says_so(capsys):
    import gpu_check

    assert gpu_check.main(["--out", "/nonexistent-never-written"]) == 2
    assert "error: no CUDA device" in capsys.readouterr().err


def test_cuda_cap_and_peak_arithmetic(monkeypatch):
    """The CUDA branches of the memory cap and the peak, on a stand-in torch.cuda (no GPU in CI): the cap
    is what is reserved now plus the card's budget, and it is lifted again whatever happens inside."""
    from types import SimpleNamespace

    import gpu_check_core as core

    gib = core.GIB
    mem = {"allocated": 1 * gib, "reserved": 2 * gib, "max_allocated": 3.5 * gib, "max_reserved": 6 * gib}
    fractions, resets = [], []
    fake = {"is_available": lambda: True, "synchronize": lambda *a: None, "empty_cache": lambda: None,
            "memory_allocated": lambda *a: mem["allocated"], "memory_reserved": lambda *a: mem["reserved"],
            "max_memory_allocated": lambda *a: mem["max_allocated"],
            "max_memory_reserved": lambda *a: mem["max_reserved"],
            "reset_peak_memory_stats": lambda *a: resets.append(1),
            "get_device_properties": lambda *a: SimpleNamespace(total_memory=100 * gib),
            "set_per_process_memory_fraction": lambda f, *a: fractions.append(f)}
    for name, fn in fake.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    cuda = torch.device("cuda")
    with pytest.raises(RuntimeError, match="out of memory"):
        with core.memory_cap(cuda, core.cap_bytes(core.GPU)):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert fractions == [pytest.approx((2 + 3.5) / 100), 1.0]
    with core.Peak(cuda) as peak:
        pass
    assert resets and peak.allocated == pytest.approx(2.5) and peak.reserved == pytest.approx(4.0)
    assert core.Peak(torch.device("cpu")).__enter__().allocated is None
