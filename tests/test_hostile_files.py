"""Hostile inputs that do not fit test_hostile.py's table (a bad invocation that must end in one line,
exit != 0, nothing written): a config file that would take the machine's memory (run in a
subprocess under a memory cap), inputs that must now succeed without losing anything (a TSV with
quotes, a `$` or `|` in names), temporaries left by a kill -9, and a null text_pair.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from msa_cache.atomic import building_folder, pid_alive, write_text_atomic
from msa_cache.errors import UserError
from msa_cache.manifest import read_manifest
from msa_cache.manifest.build import build_manifest
from msa_cache.manifest.schema import ManifestError
from msa_cache.study.journal import check_journal
from msa_cache_cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]
CAP_ABOVE_IMPORTS = 300 << 20  # bytes of address space the config read may add


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A run-config-shaped YAML of nested anchors: width**levels leaves from ~0.5 KB."""
    lines = ["l0: &l0 [" + ", ".join("abcdefghi"[:width]) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nhead_options: {{latent: *l{levels - 1}}}\n"


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to size the memory cap")
def test_alias_bomb_is_refused_under_a_memory_cap(tmp_path):
    """Run in a child whose address space is capped a few hundred MB above what its imports hold, so a
    regression dies of MemoryError in the child instead of taking the machine."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    assert len(bomb.read_bytes()) < 700
    script = textwrap.dedent(f"""
        import os, resource, sys
        import msa_cache_cli.fit, msa_cache_cli.main  # the heavy imports (torch) before the cap
        pages = int(open("/proc/self/statm").read().split()[0])
        cap = pages * os.sysconf("SC_PAGE_SIZE") + {CAP_ABOVE_IMPORTS}
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        sys.argv = ["msa-cache", "fit", "--config", {str(bomb)!r}, "--manifest", "m.parquet"]
        msa_cache_cli.main.main()
    """)
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    env.pop("MSA_CACHE_DEBUG", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and len(lines[0]) < 500, done.stderr[:2000]
    assert lines[0].startswith("error: ") and "expands to more than" in lines[0] and "bomb.yaml" in lines[0]


def test_tsv_reads_quotes_as_text_and_keeps_every_row(tmp_path):
    (tmp_path / "img").mkdir()
    labels = ["positive", "negative", "neutral"]
    rows = ["id\ttext\timage\tlabel\tsplit"]
    for i in range(18):
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        text = {3: '"an unclosed quote', 5: '"quoted" words'}.get(i, f"tweet {i}")
        rows.append(f"t{i}\t{text}\timg/{i}.png\t{labels[i % 3]}\t{'train' if i < 12 else 'dev'}")
    (tmp_path / "posts.tsv").write_text("\n".join(rows) + "\n")
    summary = build_manifest("table", root=tmp_path, output=tmp_path / "m.parquet", file="posts.tsv")
    man = read_manifest(tmp_path / "m.parquet")
    assert len(man) == 18 and summary.skipped == []
    by_id = dict(zip(man.ids, man.column("text")))
    assert by_id["t3"] == '"an unclosed quote' and by_id["t5"] == '"quoted" words' and by_id["t4"] == "tweet 4"
    assert dict(zip(man.ids, man.column("image")))["t3"] == "img/3.png"
    assert "rows read: 18 from posts.tsv; kept 18" in summary.format()


def test_csv_reports_a_field_spanning_lines_and_a_row_of_the_wrong_width(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "0.png")
    lines = ["id,text,image,label"] + [f"c{i},text {i},img/0.png,{'ab'[i % 2]}" for i in range(8)]
    lines[3] = 'c2,"never closed,img/0.png,a'
    lines[6] = 'c5,"closes here" at last,img/0.png,b'
    lines.append("c9,one,img/0.png,a,extra")
    (tmp_path / "posts.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"2 input line\(s\) cannot become rows \(malformed line 2; .*--allow-skips"):
        build_manifest("table", root=tmp_path, output=tmp_path / "m.parquet", file="posts.csv")
    summary = build_manifest("table", root=tmp_path, output=tmp_path / "m.parquet", file="posts.csv", allow_skips=True)
    assert summary.skipped[0].startswith("posts.csv:4: a quoted field runs on to line 7")
    assert summary.skipped[1] == "posts.csv:10: 5 fields where the header has 4"
    assert "c2" not in read_manifest(tmp_path / "m.parquet").ids
    assert "rows read: 6 from posts.csv; kept 4" in summary.format()  # c0 c1 c6 c7; c3-c5 inside c2


def test_a_damaged_journal_names_its_line_and_the_repair(tmp_path):
    good = json.dumps({"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}) + "\n"
    path = tmp_path / "t.journal"
    path.write_text(good * 3 + good[:20])
    with pytest.raises(UserError, match=r"damaged at line 4: the record is cut short .*head -n 3"):
        check_journal(path)
    path.write_text(good * 3)
    check_journal(path)  # a good journal passes
    check_journal(tmp_path / "new.journal")  # and a missing one (tune creates it)


def _dead_pid() -> int:
    pid = 4_000_000  # above Linux's default pid_max
    while pid_alive(pid):
        pid += 1
    return pid


def test_the_next_write_removes_temporaries_of_killed_processes(tmp_path):
    dead = _dead_pid()
    (tmp_path / f"out.tmp-{dead}").mkdir()
    (tmp_path / f"out.tmp-{dead}" / "half.json").write_text("{")
    (tmp_path / f".report.html.tmp-{dead}").write_text("<html>")
    (tmp_path / "out.tmp-1").mkdir()  # pid 1 is alive: another process's work in progress, kept
    with building_folder(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a")
    write_text_atomic(tmp_path / "report.html", "<html></html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.tmp-1", "report.html"]


def test_report_draws_dollar_pipe_and_newline_names_as_plain_text(report_world, tmp_path):
    _, runs_dir, _ = report_world
    runs = tmp_path / "toy"
    shutil.copytree(runs_dir, runs)
    family = next(p for p in runs.iterdir() if p.name.startswith("late-"))
    renamed = family.with_name("late $x^$ | y\nz")
    family.rename(renamed)
    for run in renamed.glob("seed-*"):  # classes mathtext cannot parse
        config = json.loads((run / "config.json").read_text())
        names = dict(zip(config["classes"], ["$pos_$", "neu$tral", "neg_{x"]))
        config["classes"] = list(names.values())
        (run / "config.json").write_text(json.dumps(config))
        metrics = json.loads((run / "metrics.json").read_text())
        for split in metrics.values():
            split["per_class"] = {names.get(k, k): v for k, v in split["per_class"].items()}
        (run / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(runs), "-o", str(out), "--resamples", "100", "--explain", "0"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    # the label cell, plain text (the leaderboard links it to the family's best run card)
    row = next(r for r in re.findall(r"<tr[^>]*>.*?</tr>", page, re.S)
               if re.search(r"<td>(<a [^>]*>)?late \$x\^\$ \| y z(</a>)?</td>", r))
    assert len(re.findall(r"<td>\d+\.\d\d", row)) >= 3  # its scores, not swallowed by the label


def test_a_null_text_pair_is_one_segment_in_extraction_and_fine_tuning():
    import tiny_models

    tokenizer = tiny_models.minilm_tokenizer()
    from msa_cache.encoders.base import Collator, TextSpec
    from msa_cache.finetune.data import PostCollator

    spec = TextSpec(tokenizer, max_length=16)
    texts, pairs = ["a sentence", "no target here"], ["target", None]
    alone = tokenizer(["no target here"], padding="max_length", truncation=True, max_length=16,
                      return_tensors="pt")
    extracted = Collator(spec, None)([{"row": i, "ok": True, "problem": "", "text": t, "text_pair": p}
                                      for i, (t, p) in enumerate(zip(texts, pairs))])
    assert extracted["input_ids"][1].tolist() == alone["input_ids"][0].tolist()
    assert tokenizer.decode(extracted["input_ids"][1][extracted["attention_mask"][1].bool()]) == \
        "[CLS] no target here [SEP]"
    assert extracted["token_type_ids"][1].sum() == 0 and extracted["token_type_ids"][0].sum() > 0
    tuned = PostCollator({"text": (spec, None)}, pad_to_max=False)(
        [{"row": i, "ok": True, "label": 0, "modality_labels": {}, "texts": {"text": t}, "pairs": {"text": p},
          "pixels": {}} for i, (t, p) in enumerate(zip(texts, pairs))])
    ids, mask = tuned["text/input_ids"][1], tuned["text/attention_mask"][1].bool()
    assert tokenizer.decode(ids[mask]) == "[CLS] no target here [SEP]"
    assert tokenizer.decode(tuned["text/input_ids"][0][tuned["text/attention_mask"][0].bool()]) == \
        "[CLS] a sentence [SEP] target [SEP]"
