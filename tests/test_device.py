"""`--device` resolution shared by every command: torchrun / srun ranks take their own GPU,
impossible or malformed names are one-line errors."""
import pytest
import torch
from click.testing import CliRunner

from msa_cache.device import resolve_device
from msa_cache_cli.main import main as cli

LAUNCH_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_LOCALID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees `n` CUDA devices (0: none); launch variables start unset."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)

    def set_gpus(n: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_gpus


def test_auto_without_gpu_is_cpu_even_under_torchrun(gpus, monkeypatch):
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["auto", "cuda", " CUDA "])
def test_auto_and_bare_cuda_take_the_torchrun_local_rank(gpus, monkeypatch, name):
    gpus(8)
    assert resolve_device(name) == torch.device("cuda", 0)  # single process
    for rank in range(8):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("RANK", str(8 + rank))  # second node: the global rank must not be used
        assert resolve_device(name) == torch.device("cuda", rank)


def test_explicit_index_wins_over_local_rank(gpus, monkeypatch):
    gpus(4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_local_rank_beyond_the_gpus_is_a_launch_error(gpus, monkeypatch):
    gpus(4)
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(ValueError, match=r"LOCAL_RANK=5 .* 4 CUDA device.*--nproc-per-node 4"):
        resolve_device("auto")
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK='x' is not a whole number"):
        resolve_device("auto")


def test_slurm_tasks_take_their_local_id_and_wrap_over_bound_gpus(gpus, monkeypatch):
    gpus(4)
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert resolve_device("auto") == torch.device("cuda", 2)
    gpus(1)  # srun --gpus-per-task=1: each task sees only its own GPU, as cuda:0
    assert resolve_device("auto") == torch.device("cuda", 0)
    # a job-array task is its own job: SLURM_LOCALID 0, whatever its array index
    gpus(2)
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize("name, n_gpus, message", [
    ("cuda", 0, "torch sees no CUDA GPU here"),
    ("cuda:0", 0, "torch sees no CUDA GPU here"),
    ("cuda:2", 2, r"torch sees 2 CUDA device\(s\) here: cuda:0..cuda:1"),
    ("foo", 1, "not a device name"),
    ("cuda:", 1, "not a device name"),
    ("cuda:-1", 1, "not a device name"),
    ("auto:1", 1, "not a device name"),
    ("cpu:0", 1, "not a device name"),
    ("", 1, "not a device name"),
])
def test_impossible_or_malformed_names_are_one_line_errors(gpus, name, n_gpus, message):
    gpus(n_gpus)
    with pytest.raises(ValueError, match=message) as e:
        resolve_device(name)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"--device {name} (") and "): " in text


@pytest.mark.parametrize("argv", [
    ["fit", "--head", "ae-cat"],
    ["compare", "--heads", "ae-cat"],
    ["extract", "--manifest", "m.parquet", "--encoder", "minilm"],
    ["finetune", "--head", "ae-cat", "--encoder", "minilm", "--encoder", "efficientnet-lite0"],
    ["predict", "some-run", "--text", "hi"],
])
@pytest.mark.parametrize("device, message", [("foo", "not a device name"), ("cuda", "no CUDA GPU")])
def test_every_command_refuses_a_bad_device_before_any_work(gpus, tmp_path, monkeypatch, argv, device, message):
    gpus(0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.parquet").write_bytes(b"")  # arguments that must exist, so only --device can fail
    (tmp_path / "some-run").mkdir()
    before = sorted(tmp_path.rglob("*"))
    r = CliRunner().invoke(cli, [*argv, "--device", device])
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
