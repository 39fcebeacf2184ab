"""`msa-cache report`: one self-contained HTML page about a manifest's finished runs, built from a
tiny grid of real runs. What it says must match the leaderboard `compare` computes; it must hold
no external URL and no script; every image is an inlined PNG. (Its rendering in a real browser:
test_report_browser.py.)"""
import base64
import io
import json
import re
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from msa_cache.report import build_report, write_report
from msa_cache.report.collect import read_families
from msa_cache.study.compare import finished_entries, leaderboard_markdown, summarise
from msa_cache.train.rundir import confusion_figure, plot_confusion
from msa_cache_cli.main import main as cli
from report_world import CLASSES, HEADS, N_DEV, SEEDS

matplotlib.use("Agg")
RESAMPLES = 200  # the statistics' code is tested in test_stats.py; here only that the report shows them


@pytest.fixture(scope="module")
def world(report_world):
    return report_world  # conftest.py: built once per session, shared with test_report_browser.py


@pytest.fixture(scope="module")
def page(world):
    return build_report(world[1], n_resamples=RESAMPLES)


class _Page(HTMLParser):
    """Tables (as lists of rows of cell texts, by table class), images, links, scripts, section ids."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.links, self.scripts, self.sections = [], [], [], 0, []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("class", ""), []))
        elif tag == "tr":
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "section":
            self.sections.append(a.get("id"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p


def test_sections_and_header(world, page):
    p = _parse(page)
    assert p.sections == ["leaderboard", "chart", "per-class", "confusion", "curves", "oracle", "explain"]
    meta = dict(next(rows for cls, rows in p.tables if cls == "meta"))
    assert meta["manifest"].startswith("toy") and "fingerprint" in meta["manifest"]
    assert meta["runs"].startswith(f"{len(HEADS) * len(SEEDS)} finished run(s) in {len(HEADS)} families")
    assert meta["monitor"].startswith("weighted-f1")
    assert "torch " in meta["versions"] and "scikit-learn " in meta["versions"]
    assert f"dev ({N_DEV} labeled rows)" in meta["scores on"] and "Test (20 labeled rows)" in meta["scores on"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", meta["generated"])


def test_self_contained_no_external_urls_no_script(page):
    p = _parse(page)
    assert p.scripts == 0 and "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "url(" not in page  # no CSS fetches either
    assert all(h.startswith(("#", "data:")) for h in p.links)
    # bar chart + one confusion matrix and one curves picture per family (5 families)
    assert len(p.images) == 1 + 2 * len(HEADS)
    for img in p.images:
        assert img["src"].startswith("data:image/png;base64,") and img.get("alt")
        png = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1])))
        assert png.format == "PNG" and png.width > 200 and np.asarray(png.convert("L")).std() > 5  # not blank


def test_leaderboard_is_the_one_compare_computes(world, page):
    entries = finished_entries(world[1])
    rows = summarise(entries, "weighted-f1", n_resamples=RESAMPLES)
    md = leaderboard_markdown(rows, "weighted-f1")
    want = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("|")]
    del want[1]  # the |---| line
    got = next(rows for cls, rows in _parse(page).tables if cls == "leaderboard")
    assert got == want
    assert len(got) - 1 == len(HEADS) + sum(1 for e in rows if e.kind == "ensemble")
    header = got[0]
    assert "dev weighted-f1 95% CI" in header and "p vs top (weighted-f1)" in header and "test accuracy" in header
    assert got[1][-1] == "picked (dev)"


def test_per_class_confusion_and_oracle_match_the_runs(world, page):
    runs_dir = world[1]
    tables = _parse(page).tables
    per_class_dev = next(rows for cls, rows in tables if cls == "per-class dev")
    assert per_class_dev[0][:5] == ["model", "seeds", "positive (n=10)", "neutral (n=8)", "negative (n=12)"]
    family = next(f for f in read_families(finished_entries(runs_dir)) if f.label == "late")
    f1 = [json.loads((r / "metrics.json").read_text())["dev"]["per_class"]["neutral"]["f1-score"] for r in family.runs]
    row = next(r for r in per_class_dev if r[0] == "late")
    assert row[3] == f"{100 * np.mean(f1):.2f} ± {100 * np.std(f1):.2f}"
    cm = family.confusion("dev")
    assert cm.sum() == N_DEV * len(SEEDS) and cm.shape == (3, 3)
    oracle = next(rows for cls, rows in tables if rows and rows[0][0] == "multimodal family")
    assert {r[0] for r in oracle[1:]} == {"probe", "late", "ab-add-latent16"}
    assert "On test (20 labeled rows; test is labeled)" in page


def test_explain_examples_inlined_or_skipped_with_a_note(world):
    manifest, runs_dir, caches = world
    with_examples = _parse(build_report(runs_dir, explain=2, n_resamples=RESAMPLES))
    pictures = [i for i in with_examples.images if i["alt"].startswith("explain picture")]
    assert len(pictures) == 2
    assert Image.open(io.BytesIO(base64.b64decode(pictures[0]["src"].split(",", 1)[1]))).size == (1200, 700)
    moved = caches["text"].with_name("moved")
    caches["text"].rename(moved)
    try:
        text = build_report(runs_dir, explain=2, n_resamples=RESAMPLES)
    finally:
        moved.rename(caches["text"])
    assert "skipped: " in text and not any(i["alt"].startswith("explain picture") for i in _parse(text).images)
    assert "not requested" in build_report(runs_dir, n_resamples=RESAMPLES)


def test_cli_default_and_chosen_output_and_bad_folders(world, tmp_path):
    runs_dir = world[1]
    r = CliRunner().invoke(cli, ["report", str(runs_dir), "--resamples", "100"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(runs_dir / "report.html") and (runs_dir / "report.html").stat().st_size > 10_000
    (runs_dir / "report.html").unlink()
    out = tmp_path / "sub" / "mail-me.html"
    r = CliRunner().invoke(cli, ["report", str(runs_dir), "-o", str(out), "--resamples", "100", "--monitor", "accuracy"])
    assert r.exit_code == 0, r.output
    assert "accuracy (rows are ranked" in out.read_text() and not (runs_dir / "report.html").exists()
    assert [p.name for p in out.parent.iterdir()] == ["mail-me.html"]  # the temporary file is gone

    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.output.startswith("error: no such runs folder")
    assert len(missing.output.strip().splitlines()) == 1
    (tmp_path / "empty" / "fam-0123456789" / "seed-0.tmp-1").mkdir(parents=True)
    empty = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and empty.output.startswith("error: no finished runs")
    root = CliRunner().invoke(cli, ["report", str(runs_dir.parent)])  # runs/ instead of runs/<manifest>/
    assert root.exit_code == 2 and f"pass one manifest's folder, e.g. {runs_dir}" in root.output
    assert not (runs_dir.parent / "report.html").exists()


def test_write_report_refuses_a_folder_as_output(world, tmp_path):
    with pytest.raises(IsADirectoryError):
        write_report(world[1], tmp_path, n_resamples=100)


def test_confusion_plot_is_sklearns_display_with_the_counts():
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 3, 9]])
    fig = confusion_figure(cm, CLASSES, "t")
    ax = fig.axes[0]
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(cm.ravel().tolist())
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert np.array_equal(ax.images[0].get_array(), cm)
    buf = io.BytesIO()
    plot_confusion(cm, CLASSES, buf, title="x")  # into memory, as the report renders it
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_examples_are_half_right_half_wrong_and_reproducible(world):
    from msa_cache.report.examples import pick_rows

    family = next(f for f in read_families(finished_entries(world[1])) if f.head == "ab-add")
    picked = pick_rows(family.runs[0], 4)
    assert picked == pick_rows(family.runs[0], 4) and len({i for i, _ in picked}) == 4
    assert sorted(ok for _, ok in picked) == [False, False, True, True]
    import pyarrow.parquet as pq

    t = pq.read_table(family.runs[0] / "predictions.parquet").to_pydict()
    rows = {i: (s, lab, p) for i, s, lab, p in zip(t["id"], t["split"], t["label"], t["pred"])}
    assert all(rows[i][0] == "dev" and (rows[i][1] == rows[i][2]) == ok for i, ok in picked)
