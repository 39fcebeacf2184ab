"""Image encoders side by side: EfficientNet-Lite0 vs Lite1 vs Lite2 (or any given), same MVSA-Single rows.

    python bench/image_encoders.py [--rows 256] [--repeats 2] [--threads 1] [--encoders efficientnet-lite0,...]

Per encoder: (b) the bare batched forward on inputs decoded beforehand and (c) `extract()` end to end into
a fresh folder (bench/extract.py's arms), each repeat running every encoder in turn; the fastest repeat is
kept. Prints samples/s, CPU ms per image, and each encoder's cost relative to the first.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import extract as extract_bench  # noqa: E402  bench/extract.py: prepared_batches, bare_forward, end_to_end

import torch  # noqa: E402

from msa_cache.encoders import build_encoder  # noqa: E402

DEFAULT = "efficientnet-lite0,efficientnet-lite1,efficientnet-lite2"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256, help="first N rows of the manifest (default 256)")
    ap.add_argument("--manifest", type=Path, default=common.MVSA_MANIFEST)
    ap.add_argument("--encoders", default=DEFAULT, help=f"comma list of image encoders (default {DEFAULT})")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="repeat every arm; keep the fastest")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    if not args.manifest.is_file():
        print(f"needs the MVSA-Single manifest {args.manifest} (see README: msa-cache manifest clmlf ...)")
        return 0
    names = [n for n in args.encoders.split(",") if n]
    common.print_machine("bench/image_encoders.py: image encoders side by side, (b) bare forward, (c) extract()")
    scratch = common.SCRATCH / "image-encoders"
    scratch.mkdir(parents=True, exist_ok=True)
    manifest = common.head_of_manifest(args.manifest, args.rows, scratch)
    n = len(manifest)
    encoders = {name: build_encoder(name) for name in names}
    batches = {name: extract_bench.prepared_batches(manifest, enc, args.batch_size) for name, enc in encoders.items()}
    with torch.inference_mode():  # warm-up
        for name, enc in encoders.items():
            enc.forward({k: v[:2] for k, v in batches[name][0].items()})
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for _ in range(args.repeats):
        for name, enc in encoders.items():
            for arm, (wall, cpu) in (("b", extract_bench.bare_forward(enc, batches[name])),
                                     ("c", extract_bench.end_to_end(manifest, name, scratch)[:2])):
                if (arm, name) not in best or wall < best[arm, name][0]:
                    best[arm, name] = (wall, cpu)
    first = names[0]
    rows = []
    for name in names:
        size = encoders[name].image.size
        rows.append([name, size, n / best["b", name][0], n / best["c", name][0],
                     1e3 * best["b", name][1] / n, 1e3 * best["c", name][1] / n,
                     best["c", name][0] / best["c", first][0], best["c", name][1] / best["c", first][1]])
    print(f"\nrows: the first {n} of {args.manifest.name}; batch {args.batch_size}; repeats {args.repeats}")
    common.print_table(["encoder", "px", "(b) /s", "(c) extract() /s", "(b) CPU ms/img", "(c) CPU ms/img",
                        f"(c) wall x {first}", f"(c) CPU x {first}"], rows)
    common.print_load()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
