"""bench/gpu_check.py's gpu_check.md: the sections' tables from the report's data."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return common.fmt(x, digits)
    return str(x)


def _status(r: dict) -> str:
    return r.get("status", "")


def markdown(data: dict) -> str:
    m = data.get("machine", {})
    lines = [f"# bench/gpu_check.py ({data['mode']})", "",
             f"started {data['started_utc']}, wall {data.get('wall_s', 0):.0f} s of a {data['budget_s']:.0f} s "
             f"budget; `{data['command']}`", "",
             f"GPU: **{m.get('gpu') or 'none (CPU)'}**, {m.get('gpu_memory_gib', 'n/a')} GiB, capability "
             f"{m.get('capability', 'n/a')}, driver {m.get('driver') or 'n/a'}; torch {m.get('torch')}, CUDA "
             f"{m.get('cuda') or 'n/a'}, cuDNN {m.get('cudnn') or 'n/a'}, transformers {m.get('transformers')}, "
             f"Python {m.get('python')}; CPU {m.get('cpu')} x {m.get('cpu_count')}, load {m.get('load_average')}, "
             f"/dev/shm free {m.get('dev_shm_free_gib')} GiB", "",
             f"data: {data.get('data', {}).get('source')} ({data.get('data', {}).get('rows')} rows)", ""]
    secs = data["sections"]
    fits = f"fits {data['profile']['card_gib']:g} GiB"
    if "extract" in secs:
        s = secs["extract"]
        lines += _section_head(s)
        main = [r for r in s["rows"] if r.get("kind") != "workers"]
        lines.append(common.table(
            ["encoder", "batch", "workers", "(b) bare forward /s", "(c) extract() /s", "(c) row loop /s", "c/b",
             "CPU ms/sample (c)", "KiB/row", "status"],
            [[r.get("encoder"), r.get("batch") or "", r.get("workers", ""), _f(r.get("b_per_s")),
              _f(r.get("c_per_s")), _f(r.get("c_loop_per_s")), _f(r.get("c_over_b")),
              _f(r.get("cpu_ms_per_sample")), _f(r.get("kib_per_row")), _status(r)] for r in main]))
        sweep = [r for r in s["rows"] if r.get("kind") == "workers"]
        if sweep:
            lines += ["", common.table(
                ["vit decode workers", "batch", "(c) extract() /s", "c/b", "CPU ms/sample", "status"],
                [[r.get("workers"), r.get("batch"), _f(r.get("c_per_s")), _f(r.get("c_over_b")),
                  _f(r.get("cpu_ms_per_sample")), _status(r)] for r in sweep])]
        lines.append("")
    if "heads" in secs:
        s = secs["heads"]
        lines += _section_head(s)
        lines.append(common.table(
            ["head", "config", "parameters", "fit GiB", "fit reserved GiB", "fit s/step", "predict GiB",
             "predict GiB (trainer batch)", fits, "largest batch that fits", "predict (trainer batch) fits",
             "status"],
            [[r.get("head"), r.get("config"), f"{r['params']:,}" if r.get("params") is not None else "n/a",
              "closed form" if r.get("head") == "probe" else _f(r.get("fit_gib")),
              "" if r.get("head") == "probe" else _f(r.get("fit_reserved_gib")),
              "" if r.get("head") == "probe" else _f(r.get("fit_s_per_step")),
              _f(r.get("predict_gib")), _f(r.get("predict_big_gib")), _f(r.get("fits_card")),
              "" if r.get("fits_card") else _f(r.get("largest_batch")), _f(r.get("predict_big_fits_card")),
              _status(r)] for r in s["rows"]]))
        lines.append("")
    if "finetune" in secs:
        s = secs["finetune"]
        lines += _section_head(s)
        lines.append(common.table(
            ["head", "precision", "grad checkpointing", "batch", "peak GiB", "reserved GiB", "s/step", fits,
             "status"],
            [[r.get("head"), r.get("precision"), "on" if r.get("grad_checkpointing") else "off", r.get("batch"),
              _f(r.get("peak_gib")), _f(r.get("reserved_gib")), _f(r.get("s_per_step")), _f(r.get("fits_card")),
              " ".join(x for x in (_status(r), r.get("note", "")) if x)] for r in s["rows"]]))
        lines.append("")
    if "oom" in secs:
        s = secs["oom"]
        lines += _section_head(s)
        lines.append(common.table(
            ["what", "requested batch", "cap GiB", "result", "logged", "status"],
            [[r.get("what"), r.get("requested_batch"), _f(r.get("cap_gib")), r.get("result", ""),
              "; ".join(r.get("halvings", [])), _status(r)] for r in s["rows"]]))
        lines.append("")
    if data.get("notes"):
        lines += ["## notes", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(lines) + "\n"


def _section_head(s: dict) -> list[str]:
    return [f"## {s['title']}", "", f"status: {s['status']}" + (f", {s['seconds']} s" if "seconds" in s else ""),
            ""] + [f"- {n}" for n in s["notes"]] + [""]
