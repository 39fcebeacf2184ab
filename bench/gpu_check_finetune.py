"""bench/gpu_check.py, sections 3 and 4: fine-tune steps (precisions x gradient checkpointing) and the
out-of-memory paths triggered on purpose (extract()'s batch halving, a fine-tune step under the card cap)."""
from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check_world as world  # noqa: E402
from gpu_check_core import (CLASSES, FINETUNE_HEADS, GIB, Context, Peak, Report, c_workers, cap_bytes,  # noqa: E402
                            cpu_model, encoder_on_device, memory_cap, timed_steps)
from gpu_check_extract import end_to_end  # noqa: E402

import torch  # noqa: E402

from msa_cache.extract.dataset import RowDataset  # noqa: E402
from msa_cache.extract.runner import BatchRunner, is_oom  # noqa: E402
from msa_cache.finetune import FinetuneModel  # noqa: E402
from msa_cache.finetune.data import PostCollator, PostDataset, make_loader  # noqa: E402
from msa_cache.finetune.optim import grad_scaler, make_optimizer, resolve_precision  # noqa: E402
from msa_cache.finetune.train import backward_step, optimizer_step  # noqa: E402


def finetune_model(ctx: Context, head: str, checkpointing: bool):
    """BERT + ViT (fresh copies of the random models) and the head, both encoders unfrozen."""
    encoders = {"text": world.build_encoder_for("bert", ctx.profile.models, ctx.tokenizer,
                                                copy.deepcopy(cpu_model(ctx, "bert"))),
                "image": world.build_encoder_for("vit", ctx.profile.models, ctx.tokenizer,
                                                 copy.deepcopy(cpu_model(ctx, "vit")))}
    model = FinetuneModel(encoders, head, CLASSES, {}, "cls")
    model.set_trainable(["text", "image"])
    model.train()
    unsupported = model.enable_grad_checkpointing() if checkpointing else []
    return model, unsupported


def finetune_batches(ctx: Context, model, n_batches: int) -> list[dict]:
    """Training batches (augmentation on) from the fine-tune trainer's dataset, collator and loader."""
    specs = model.input_specs()
    rows = list(range(min(len(ctx.manifest), n_batches * ctx.profile.ft_batch)))
    ds = PostDataset(ctx.manifest, rows, specs, train=True, augment=True)
    loader = make_loader(ds, PostCollator(specs, model.pad_to_max), ctx.profile.ft_batch, shuffle=False,
                         workers=min(4, ctx.prep_workers))
    return list(loader)


def finetune_step_fn(model, batches: list[dict], device: torch.device, precision: str):
    optimizer, _ = make_optimizer(model, 1e-3, 2e-5, 0.01, total_steps=100, warmup=0.1, encoder_start=0)
    scaler = grad_scaler(precision)
    it = iter(range(10**9))

    def step():
        batch = batches[next(it) % len(batches)]
        backward_step(model, batch, None, device, precision, scaler)
        optimizer_step(model, optimizer, scaler)

    return step


def precisions(device: torch.device) -> list[str]:
    """fp32, what --amp picks on this device (bf16 on Ampere+), and fp16 + GradScaler (a GTX 980's)."""
    return list(dict.fromkeys(["fp32", resolve_precision(device, True), "fp16"]))


def section_finetune(ctx: Context, rep: Report) -> None:
    p, device = ctx.profile, ctx.device
    t0 = time.perf_counter()
    sizes = "BERT-base + ViT-B/16 sized" if p.models == "base" else "tiny BERT + tiny ViT"
    sec = rep.section("finetune", f"3. fine-tune steps: {sizes} encoders unfrozen, batch {p.ft_batch}", [
        "one step = the fine-tune trainer's backward_step + optimizer_step (autocast at the precision, "
        "GradScaler for fp16, grad clipping, AdamW with head and encoder groups) on batches from its own "
        "dataset and collator (augmentation on), collated before the clock; 1 warm-up step, median of "
        f"{p.ft_steps}. GiB = peak allocated above what was allocated before the model was built (weights, "
        "gradients, AdamW state, activations).",
        f"precisions: fp32; '{resolve_precision(device, True)}' = what --amp picks here; fp16 + GradScaler = "
        "what --amp picks on a GPU without native bf16 (GTX 980).",
        f"fits {p.card_gib:g} GiB: peak reserved <= {cap_bytes(p) / GIB:g} GiB (card minus CUDA context)."])
    if device.type == "cpu":
        sec["notes"].append(f"CPU dry run: no CUDA memory (GiB cells n/a); fp16 for {FINETUNE_HEADS[0]} only (CPU "
                            "fp16 matmuls are emulated, slow), and the GradScaler disables itself without CUDA.")
    for head in FINETUNE_HEADS:
        cache: dict = {}
        for precision in precisions(device):
            if device.type == "cpu" and precision == "fp16" and head != FINETUNE_HEADS[0]:
                continue  # CPU fp16 matmuls are emulated (slow); the first head runs this code path
            for ckpt in (False, True):
                def measure(head=head, precision=precision, ckpt=ckpt, cache=cache):
                    with Peak(device) as pk:
                        model, unsupported = finetune_model(ctx, head, ckpt)
                        if "batches" not in cache:
                            cache["batches"] = finetune_batches(ctx, model, 1 + p.ft_steps)
                        model.to(device)
                        times = timed_steps(finetune_step_fn(model, cache["batches"], device, precision), 1,
                                            p.ft_steps, device)
                    out = {"s_per_step": statistics.median(times), "peak_gib": pk.allocated,
                           "reserved_gib": pk.reserved, "params": sum(q.numel() for q in model.parameters())}
                    if pk.reserved is not None:
                        out["fits_card"] = pk.reserved <= cap_bytes(p) / GIB
                    if unsupported:
                        out["note"] = f"no checkpointing for {', '.join(unsupported)}"
                    return out

                rep.item(sec, f"finetune {head} {precision} ckpt={'on' if ckpt else 'off'}", measure, head=head,
                         precision=precision, grad_checkpointing=ckpt, batch=p.ft_batch)
        cache.clear()
    rep.close_section(sec, t0)


# -- 4. out-of-memory paths on purpose --------------------------------------------------------
def section_oom(ctx: Context, rep: Report) -> None:
    p, device = ctx.profile, ctx.device
    t0 = time.perf_counter()
    sec = rep.section("oom", "4. out-of-memory paths, triggered on purpose", [
        f"extract(): vit asked for batch {p.oom_request} under a cap of 2.5 x the activation memory of batch "
        f"{p.oom_request // 8} (measured first with extract()'s BatchRunner): its runner must halve the batch "
        "(logging each halving) and still write every row.",
        f"fine-tune: late, fp16 + GradScaler, gradient checkpointing on (the thriftiest GTX 980 setting), batch "
        f"{p.ft_batch}, under the {p.card_gib:g} GiB-card cap. The fine-tune trainer has no batch halving: an "
        "out-of-memory error ends the run (recorded, not raised)."])
    if device.type == "cpu":
        sec["notes"].append("CPU dry run: both out-of-memory errors are SIMULATED (forward pre-hook).")

    def halving():
        enc = encoder_on_device(ctx, "vit")
        small = p.oom_request // 8
        loader = torch.utils.data.DataLoader(RowDataset(ctx.manifest, enc.text, enc.image), batch_size=small,
                                             collate_fn=enc.collator())
        first = next(iter(loader))
        runner = BatchRunner(enc, device, "auto", "float16", small, log=lambda m: None)
        with Peak(device) as pk:
            runner(first)
        act = pk.allocated * GIB if pk.allocated is not None else 0.0
        cap = 2.5 * act
        log: list[str] = []
        with memory_cap(device, cap, enc.model, small * 2):
            c = end_to_end(ctx, enc, p.oom_request, c_workers(p), log)
        halvings = [m for m in log if "out of memory" in m]
        return {"requested_batch": p.oom_request, "cap_gib": cap / GIB if device.type == "cuda" else None,
                "halvings": halvings, "c_per_s": c["c_per_s"],
                "result": (f"halved {len(halvings)}x, all {len(ctx.manifest)} rows written" if halvings else
                           "NOT triggered: the cap was not reached"),
                **({} if halvings else {"status": "not triggered"})}

    rep.item(sec, "oom: extract() batch halving", halving, what="extract() batch halving")

    def finetune_capped():
        model, _ = finetune_model(ctx, "late", True)
        batches = finetune_batches(ctx, model, 2)
        capped = cap_bytes(p) / GIB if device.type == "cuda" else None
        try:
            with memory_cap(device, cap_bytes(p), model.head, p.ft_batch // 2):
                model.to(device)  # under the cap: the card holds the weights too
                timed_steps(finetune_step_fn(model, batches, device, "fp16"), 0, 2, device)
            return {"requested_batch": p.ft_batch, "cap_gib": capped, "result": "fits: 2 steps ran"}
        except RuntimeError as e:
            if not is_oom(e):
                raise
            return {"requested_batch": p.ft_batch, "cap_gib": capped,
                    "result": "out of memory: " + str(e).splitlines()[0][:100]}

    rep.item(sec, "oom: fine-tune under the card cap", finetune_capped, what="fine-tune step under the card cap")
    rep.close_section(sec, t0)
