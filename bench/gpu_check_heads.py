"""bench/gpu_check.py, section 2: every registered head at 768-d tokens: peak memory of a fit and a predict
step, seconds per step, whether it fits a 4 GiB card, else the largest batch that does."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_core import (CLASSES, GIB, PAPER, Context, Peak, Profile, Report, cap_bytes,  # noqa: E402
                            free_memory, memory_cap, one_line, sim_max_batch, timed_steps)

import torch  # noqa: E402

from msa_cache.extract.runner import is_oom  # noqa: E402
from msa_cache.fit.config import RunSpec, TrainConfig  # noqa: E402
from msa_cache.fit.trainer import make_optimizer as make_fit_optimizer  # noqa: E402
from msa_cache.fit.trainer import train_step  # noqa: E402
from msa_cache.heads import HEADS, Batch, ModalityInput, ModalitySpec, create_head  # noqa: E402
from msa_cache.train.loop import amp_autocast  # noqa: E402
from msa_cache.train.loop import grad_scaler as fit_grad_scaler  # noqa: E402


def head_spec(p: Profile) -> dict:
    return {"text": ModalitySpec(p.dim, p.dim, p.text_tokens), "image": ModalitySpec(p.dim, p.dim, p.image_tokens)}


def make_batch(p: Profile, n: int, device: torch.device, seed: int = 0) -> Batch:
    """As bench/gpu_memory.py: float32 like the cache reader gives, text with 8..L real tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(8, p.text_tokens), p.text_tokens + 1, (n,), generator=g)
    mask = torch.arange(p.text_tokens)[None, :] < lengths[:, None]
    text = ModalityInput(torch.randn(n, p.dim, generator=g),
                         torch.randn(n, p.text_tokens, p.dim, generator=g) * mask[..., None], mask)
    image = ModalityInput(torch.randn(n, p.dim, generator=g), torch.randn(n, p.image_tokens, p.dim, generator=g))
    return Batch({"text": text, "image": image}, torch.randint(0, CLASSES, (n,), generator=g), {},
                 [str(i) for i in range(n)]).to(device)


def trainer_step_fn(head, batch: Batch, device: torch.device):
    """The trainer's fit step: its optimizer, its GradScaler, AMP on CUDA (TrainConfig's default)."""
    optimizer = make_fit_optimizer(head, RunSpec("", {}, head.name, {}, TrainConfig(), 0))
    use_amp = device.type == "cuda" and TrainConfig().amp
    scaler = fit_grad_scaler(use_amp)
    head.train()
    return lambda: train_step(head, batch, optimizer, scaler, device, use_amp)


def predict_step(head, batch: Batch, device: torch.device) -> None:
    """As the trainer's predict_probs does it for one batch."""
    head.eval()
    with torch.no_grad(), amp_autocast(device, device.type == "cuda" and TrainConfig().amp), head.logits_only():
        torch.softmax(head(batch).logits.float(), dim=-1).cpu()


def closed_form(name: str) -> bool:
    return HEADS[name].fit_mode == "closed_form"


def run_head(p: Profile, name: str, options: dict, n: int, device: torch.device, steps: int, predict_n: int):
    """Build, fit steps, predict at n and predict_n: {peaks, step times, params}. OOM propagates."""
    out: dict = {}
    with Peak(device) as fit_peak:
        head = create_head(name, head_spec(p), CLASSES, options).to(device)
        out["params"] = sum(q.numel() for q in head.parameters())
        batch = make_batch(p, n, device)
        if not closed_form(name):
            times = timed_steps(trainer_step_fn(head, batch, device), 2, steps, device)
            out["fit_s_per_step"] = statistics.median(times) if times else None
    if not closed_form(name):
        out["fit_gib"], out["fit_reserved_gib"] = fit_peak.allocated, fit_peak.reserved
    head.zero_grad(set_to_none=True)
    for key, size in (("predict_gib", n), ("predict_big_gib", predict_n)):
        with Peak(device) as pk:
            b = batch if size == n else make_batch(p, size, device, seed=1)
            predict_step(head, b, device)
            b = None
        out[key] = pk.allocated
    return head, out


def fits_under_cap(p: Profile, name: str, options: dict, n: int, device: torch.device, params: int) -> tuple[bool, str]:
    """Whether build + 2 fit steps + predict at n run under the small-card cap."""
    probe = create_head(name, head_spec(p), CLASSES, options) if device.type == "cpu" else None
    try:
        with memory_cap(device, cap_bytes(p), probe, sim_max_batch(p, params)):
            if probe is not None:  # dry run: the simulated cap hooks the head that runs
                head = probe
                batch = make_batch(p, n, device)
                if not closed_form(name):
                    trainer_step_fn(head, batch, device)()
                predict_step(head, batch, device)
            else:
                run_head(p, name, options, n, device, 0, n)
        return True, ""
    except RuntimeError as e:
        if not is_oom(e):
            raise
        return False, str(e).splitlines()[0][:120]
    finally:
        free_memory()


def largest_fitting_batch(p: Profile, name: str, options: dict, device: torch.device, params: int, hi: int) -> int:
    """Binary search in [1, hi) under the cap (hi does not fit); 0 when even batch 1 does not."""
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, _ = fits_under_cap(p, name, options, mid, device, params)
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo


def head_configs(p: Profile) -> list[tuple[str, str, dict]]:
    out = []
    for name in sorted(HEADS):
        out.append((name, "default", {}))
        if name in PAPER:
            opts = {k: (p.paper_width if v is None else v) for k, v in PAPER[name].items()}
            out.append((name, "paper: " + ", ".join(f"{k} {v}" for k, v in opts.items()), opts))
    return out


def section_heads(ctx: Context, rep: Report) -> None:
    p, device = ctx.profile, ctx.device
    t0 = time.perf_counter()
    cap = cap_bytes(p) / GIB
    sec = rep.section("heads", f"2. heads: batch {p.head_batch}, {p.dim}-d tokens ({p.text_tokens} text + "
                               f"{p.image_tokens} image)", [
        "fit = the trainer's train_step (fp16 autocast + GradScaler on CUDA, the head's optimizer), peak over "
        f"building the head and inputs, 2 warm-up and {p.fit_steps} timed steps (median s/step); predict = eval, "
        f"no_grad, autocast, logits_only, at {p.head_batch} and at the trainer's predict batch {p.predict_batch}. "
        "GiB = torch.cuda.max_memory_allocated above what was allocated before (weights, inputs, optimizer "
        "state, activations; the CUDA context comes on top).",
        f"fits {p.card_gib:g} GiB = build + 2 fit steps + predict at batch {p.head_batch} run again under "
        f"torch.cuda.set_per_process_memory_fraction capping the allocator at {cap:g} GiB ({p.card_gib:g} GiB "
        f"card minus {p.context_gib:g} GiB for the CUDA context); 'largest batch' = binary search under the same "
        f"cap (not a scaling estimate: INFIG's HFAM grows with batch squared). predict {p.predict_batch} under "
        "the cap is checked separately.",
        "probe is fitted in closed form on the CPU (sklearn): no fit step on the GPU."])
    if device.type == "cpu":
        sec["notes"].append("CPU dry run: no CUDA memory (GiB cells n/a); the cap is SIMULATED: batch x "
                            f"parameters <= {p.sim_units:g}.")
    for name, config, options in head_configs(p):
        def measure(name=name, options=options):
            head, out = run_head(p, name, options, p.head_batch, device, p.fit_steps, p.predict_batch)
            del head
            free_memory()
            ok, why = fits_under_cap(p, name, options, p.head_batch, device, out["params"])
            out["fits_card"] = ok
            try:  # a failure here keeps the measurements above
                if not ok:
                    out["oom"] = why
                    out["largest_batch"] = largest_fitting_batch(p, name, options, device, out["params"],
                                                                 p.head_batch)
                out["predict_big_fits_card"] = predict_fits(p, name, options, device, out["params"])
            except Exception as e:  # noqa: BLE001 - e.g. a loss undefined at batch 1
                out["status"] = f"error under the cap: {one_line(e)}"
            return out

        rep.item(sec, f"head {name} ({config})", measure, head=name, config=config)
    rep.close_section(sec, t0)


def predict_fits(p: Profile, name: str, options: dict, device: torch.device, params: int) -> bool:
    """Whether the head's weights + a predict step at the trainer's batch run under the card cap."""
    head = create_head(name, head_spec(p), CLASSES, options)
    try:
        with memory_cap(device, cap_bytes(p), head, sim_max_batch(p, params)):
            head.to(device)  # under the cap: the card holds the weights too
            predict_step(head, make_batch(p, p.predict_batch, device, seed=1), device)
        return True
    except RuntimeError as e:
        if not is_oom(e):
            raise
        return False
    finally:
        del head
        free_memory()
