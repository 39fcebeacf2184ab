"""Peak CUDA memory of every registered head at ViT-base / BERT-base sized tokens.

    python bench/gpu_memory.py [--batch 64] [--heads all] [--cpu-stand-in]

Inputs: batch 64 (--batch), text 128 tokens x 768 + mask (8..128 real tokens) and a
768-d pooled vector, image 197 tokens x 768 and a 768-d pooled vector, 3 classes,
float32 as the cache reader returns them. Each head is built with its default
options and measured in its own subprocess:
  fit step:     forward + loss + backward + optimizer step, as the trainer does it on
                CUDA (fp16 autocast + GradScaler, the head's own optimizer); the peak
                is over two steps (the first creates the optimizer state);
  predict step: eval mode, no_grad, autocast, at --batch and at 256 (the batch the
                trainer's predict_probs uses).
Peak = torch.cuda.max_memory_allocated (tensors incl. weights, inputs, optimizer
state; the CUDA context, ~300-500 MB, comes on top). Target: each under 4 GB
(a GTX 980). An out-of-memory error is reported as OOM.

Without CUDA it says that it needs a GPU and exits 0. With --cpu-stand-in it then
reports, clearly labelled, a CPU stand-in instead: parameter counts and the peak
resident memory the same steps add on the CPU in float32 (peak RSS of the
subprocess minus its RSS before the head and inputs were built). That is not the
GPU number: fp16 autocast stores many activations at half size, and the CUDA
caching allocator and cuBLAS workspaces behave differently; read it as a rough
guide to which heads come near 4 GB.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TEXT_L, IMAGE_P, DIM, CLASSES = 128, 197, 768, 3
PREDICT_BATCH = 256  # msa_cache.fit.trainer.PREDICT_BATCH
GB = 2**30


def make_batch(n: int, device, seed: int = 0):
    import torch

    from msa_cache.heads import Batch, ModalityInput

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, TEXT_L + 1, (n,), generator=g)
    mask = torch.arange(TEXT_L)[None, :] < lengths[:, None]
    text = ModalityInput(torch.randn(n, DIM, generator=g), torch.randn(n, TEXT_L, DIM, generator=g) * mask[..., None],
                         mask)
    image = ModalityInput(torch.randn(n, DIM, generator=g), torch.randn(n, IMAGE_P, DIM, generator=g), None)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    return Batch({"text": text, "image": image}, labels, {}, [str(i) for i in range(n)]).to(device)


def build(head_name: str, device):
    from msa_cache.heads import ModalitySpec, create_head

    spec = {"text": ModalitySpec(DIM, DIM, TEXT_L), "image": ModalitySpec(DIM, DIM, IMAGE_P)}
    return create_head(head_name, spec, CLASSES).to(device)


def fit_steps(head, batch, device, steps: int = 2) -> None:
    """What `train_loop` does per batch (AMP on CUDA, as TrainConfig's default amp=True)."""
    from msa_cache.fit.config import RunSpec, TrainConfig
    from msa_cache.fit.trainer import make_optimizer, train_step
    from msa_cache.train.loop import grad_scaler

    spec = RunSpec("", {}, head.name, {}, TrainConfig(), 0)
    optimizer = make_optimizer(head, spec)
    use_amp = device.type == "cuda"
    scaler = grad_scaler(use_amp)
    head.train()
    for _ in range(steps):
        train_step(head, batch, optimizer, scaler, device, use_amp)


def predict_step(head, batch, device) -> None:
    import torch

    from msa_cache.train.loop import amp_autocast

    head.eval()
    with torch.no_grad(), amp_autocast(device, device.type == "cuda"), head.logits_only():  # as predict_probs
        logits = head(batch).logits
        torch.softmax(logits.float(), dim=-1).cpu()


def child(job: dict) -> None:
    import torch

    common.set_threads(job.get("threads"))
    name, n, step = job["head"], job["batch"], job["step"]
    device = torch.device(job["device"])
    result = {"head": name, "step": step, "batch": n}
    if device.type == "cuda":
        out = {}
        head = build(name, device)
        result["params"] = sum(p.numel() for p in head.parameters())
        for label, fn, size in (("fit", fit_steps, n), ("predict", predict_step, n),
                                ("predict_trainer", predict_step, PREDICT_BATCH)):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                batch = make_batch(size, device)
                fn(head, batch, device)
                torch.cuda.synchronize()
                out[label] = torch.cuda.max_memory_allocated() / GB
            except torch.cuda.OutOfMemoryError:
                out[label] = "OOM"
            batch = None
        result.update(out)
    else:  # CPU stand-in: what the same step adds to this process's peak RSS, fp32
        from msa_cache.heads import HEADS  # noqa: F401  (imports every head module before the baseline)
        import msa_cache.fit.trainer  # noqa: F401

        # Before the baseline: initialise the math libraries, autograd and the optimizers (their first use
        # imports torch._dynamo, ~100 MB of Python objects that are not the head's memory).
        warm = torch.nn.Linear(8, 8)
        for opt in (torch.optim.Adam(warm.parameters()), torch.optim.AdamW(warm.parameters())):
            warm(torch.randn(4, 8)).softmax(-1).sum().backward()
            opt.step()
        base = common.rss_mib()
        head = build(name, device)
        result["params"] = sum(p.numel() for p in head.parameters())
        batch = make_batch(n, device)
        (fit_steps if step == "fit" else predict_step)(head, batch, device)
        result["base_rss_mib"] = base
    common.child_result(result)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--heads", default="all", help="comma list, or all (every registered head)")
    ap.add_argument("--cpu-stand-in", action="store_true", help="without CUDA, report the CPU stand-in (slow)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the CPU stand-in")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0

    import torch

    from msa_cache.heads import HEADS

    common.set_threads(args.threads)
    heads = sorted(HEADS) if args.heads == "all" else [h for h in args.heads.split(",") if h]
    cuda = torch.cuda.is_available()
    if not cuda:
        print("bench/gpu_memory.py measures peak CUDA memory and needs a GPU with CUDA; none is available here, "
              "so there is nothing to measure.")
        if not args.cpu_stand_in:
            print("(--cpu-stand-in reports parameter counts and fp32 CPU memory of the same steps instead.)")
            return 0
    common.print_machine("bench/gpu_memory.py: peak memory per head, batch "
                         f"{args.batch}, text {TEXT_L}x{DIM}, image {IMAGE_P}x{DIM}"
                         + ("" if cuda else " -- CPU STAND-IN, not GPU memory"))
    rows = []
    if cuda:
        for name in heads:
            r = common.run_child(__file__, {"head": name, "batch": args.batch, "step": "all", "device": "cuda"})
            cells = [r[k] for k in ("fit", "predict", "predict_trainer")]
            worst = max((c for c in cells if isinstance(c, float)), default=float("inf"))
            ok = all(isinstance(c, float) and c < 4 for c in cells)
            rows.append([name, f"{r['params']:,}", *[c if isinstance(c, str) else round(c, 3) for c in cells],
                         "met" if ok else "MISSED"])
            print(f"  {name}: {cells} (worst {worst:.3f} GB)", flush=True)
        print()
        common.print_table(["head", "parameters", f"fit step GB (batch {args.batch})",
                            f"predict GB (batch {args.batch})", f"predict GB (batch {PREDICT_BATCH}, trainer)",
                            "all < 4 GB"], rows)
    else:
        for name in heads:
            cells, params = {}, 0
            for step in ("fit", "predict"):
                try:
                    r = common.run_child(__file__, {"head": name, "batch": args.batch, "step": step, "device": "cpu",
                                                    "threads": args.threads})
                    cells[step] = (r["peak_rss_mib"] - r["base_rss_mib"]) / 1024
                    params = r["params"]
                except RuntimeError as e:
                    cells[step] = f"failed: {str(e).splitlines()[0][:60]}"
            rows.append([name, f"{params:,}", f"{4 * params / 2**20:.1f}", *cells.values()])
            print(f"  {name}: {cells} (load {common.load_average()})", flush=True)
        print("\nCPU STAND-IN (no GPU here): fp32, no autocast; GiB added to the process's peak RSS by building "
              "the head and inputs and running the step. Not CUDA memory.")
        common.print_table(["head", "parameters", "weights MiB (fp32)", f"fit step GiB, CPU fp32 (batch {args.batch})",
                            f"predict GiB, CPU fp32 (batch {args.batch})"], rows)
    common.print_load()
    return 0


if __name__ == "__main__":
    sys.exit(main())
