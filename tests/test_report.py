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
    assert p.sections == ["leaderboard", "chart", "per-class", "confusion", "curves", "oracle", "robustness",
                          "transfer", "explain"]
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
    # in-page anchors, inlined downloads, and relative links to the runs' cards and folders beside the page
    assert all(h.startswith(("#", "data:")) or (h.endswith(("README.md", "/")) and ":" not in h) for h in p.links)
    # dot-and-interval plot + one confusion matrix and one curves picture per family (5 families)
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
    added = [got[0].index(h) for h in ("options", "parameters", "training time", "p (Holm)")]
    assert [[c for i, c in enumerate(r) if i not in added] for r in got] == want  # the rest: compare's cells
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


# --- the leaderboard's plot, the curves, run links and details, per-class scores, Holm, the footer ---


def _leaderboard_rows(runs_dir):
    return summarise(finished_entries(runs_dir), "weighted-f1", n_resamples=RESAMPLES)


def test_dot_and_interval_plot_shows_each_rows_mean_and_interval_in_leaderboard_order(world):
    from matplotlib.collections import LineCollection

    from msa_cache.report.figures import interval_figure

    rows = _leaderboard_rows(world[1])
    fig = interval_figure(rows, "weighted-f1")
    ax = fig.axes[0]
    assert not ax.patches  # no bars
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    means = [100 * e.stat("dev", "weighted_f1")[0] for e in rows]
    assert [float(d.get_xdata()[0]) for d in dots] == pytest.approx(means)
    assert [float(d.get_ydata()[0]) for d in dots] == list(range(len(rows)))
    segments = [seg for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    want = [tuple(100 * v for v in e.stats["dev"].interval["weighted_f1"]) for e in rows]
    assert np.allclose([(s[0][0], s[1][0]) for s in segments], want)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert [lab.removesuffix(" ≈") for lab in labels] == [e.label for e in rows]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # top row at the top
    lo, hi = ax.get_xlim()
    assert lo <= min(w[0] for w in want) and hi >= max(w[1] for w in want)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _history(dev_loss: bool):
    recs = [{"epoch": e, "seconds": 0.5, "train_loss": 1.0 / e, "dev_weighted_f1": 0.5 + 0.1 * e}
            for e in (1, 2, 3)]  # the last epoch is the best: its star sits on the axes' corner
    if dev_loss:
        for r in recs:
            r["dev_loss"] = 1.2 / r["epoch"]
    return recs + [{"best_epoch": 3, "best_dev_score": 0.8, "monitor": "weighted-f1"}]


@pytest.mark.parametrize("dev_loss", [True, False])
def test_curves_star_the_kept_epoch_unclipped_and_draw_dev_loss_only_where_recorded(dev_loss):
    import matplotlib.pyplot as plt

    from msa_cache.report.figures import curves_figure, has_dev_loss

    histories = {"seed-0": _history(dev_loss), "seed-1": _history(dev_loss)}
    assert has_dev_loss(histories) is dev_loss
    fig = curves_figure("t", histories, "weighted-f1")
    ax_loss, ax_dev = fig.axes
    stars = [line for line in ax_dev.lines if line.get_marker() == "*"]
    assert len(stars) == 2
    fig.canvas.draw()
    for star in stars:
        assert not star.get_clip_on()
        x, y = float(star.get_xdata()[0]), float(star.get_ydata()[0])
        assert (x, y) == (3, pytest.approx(80.0))
        (x0, x1), (y0, y1) = ax_dev.get_xlim(), ax_dev.get_ylim()
        assert x0 < x < x1 and y0 < y < y1  # inside the frame with room: the marker is not cut by the edge
    dashed = [line for line in ax_loss.lines if line.get_linestyle() == "--"]
    if dev_loss:
        assert len(dashed) == 2 and list(dashed[0].get_ydata()) == pytest.approx([1.2, 0.6, 0.4])
        assert "dev" in ax_loss.get_title()
    else:
        assert not dashed and "no dev loss recorded" in ax_loss.get_title()
    plt.close(fig)


def test_curves_caption_says_whether_dev_loss_is_drawn(world, page):
    from msa_cache.report.figures import has_dev_loss

    fam = next(f for f in read_families(finished_entries(world[1])) if f.label == "late")
    caption = ("loss: train (solid) and dev (dashed)" if has_dev_loss(fam.histories()[0])
               else "records no dev loss, so none is drawn")
    assert caption in page


def test_each_leaderboard_row_links_its_card_and_shows_options_parameters_and_time(world, tmp_path):
    import urllib.parse
    from pathlib import Path

    runs_dir = world[1]
    out = tmp_path / "elsewhere" / "r.html"  # links are relative to where the page is saved
    write_report(runs_dir, out, n_resamples=RESAMPLES)
    text = out.read_text()
    p = _parse(text)
    table = next(rows for cls, rows in p.tables if cls == "leaderboard")
    header, body = table[0], table[1:]
    hrefs = [h for h in p.links if not h.startswith(("#", "data:"))]
    assert len(hrefs) == len(body)  # one link per row, on its name
    families = {f.label: f for f in read_families(finished_entries(runs_dir))}
    for row, href in zip(body, hrefs):
        target = (out.parent / urllib.parse.unquote(href)).resolve()
        assert target.exists(), href
        cells = dict(zip(header, row))
        if row[0] in families:
            fam = families[row[0]]
            dev = [json.loads((r / "metrics.json").read_text())["dev"]["weighted_f1"] for r in fam.runs]
            best = fam.runs[int(np.argmax(dev))]
            assert target == (best / "README.md").resolve()
            n = json.loads((best / "config.json").read_text())["num_parameters"]
            assert cells["parameters"] == f"{n:,}"
            seconds = [sum(r["seconds"] for r in map(json.loads, (run / "history.jsonl").read_text().splitlines())
                           if "epoch" in r and "seconds" in r) for run in fam.runs]
            if fam.head == "probe":
                assert cells["training time"] == "-" or cells["training time"].endswith("/ seed")
            else:
                assert cells["training time"] == f"{np.mean(seconds):.1f} s / seed"
            opts = json.loads((best / "config.json").read_text())["spec"]["head_options"]
            assert cells["options"] == (" ".join(f"{k}={v}" for k, v in sorted(opts.items())) or "(defaults)")
        else:  # a seed ensemble: its family folder
            assert row[0].endswith("[seed ensemble]") and target.is_dir() and Path(target).name.startswith(
                row[0].split()[0])
            assert cells["parameters"].startswith(f"{len(SEEDS)} × ")
    assert families["ab-add-latent16"].options["latent"] == 16
    assert "latent=16" in next(r for r in body if r[0] == "ab-add-latent16")[header.index("options")].split()


def test_per_class_precision_and_recall_beside_f1(world, page):
    per_class_dev = next(rows for cls, rows in _parse(page).tables if cls == "per-class dev")
    header = per_class_dev[0]
    family = next(f for f in read_families(finished_entries(world[1])) if f.label == "late")
    row = dict(zip(header, next(r for r in per_class_dev if r[0] == "late")))
    for score in ("precision", "recall"):
        for c in CLASSES:
            vals = [json.loads((r / "metrics.json").read_text())["dev"]["per_class"][c][score] for r in family.runs]
            assert row[f"{c} {score}"] == f"{100 * np.mean(vals):.2f} ± {100 * np.std(vals):.2f}"


def test_holm_adjustment_by_hand_and_on_the_page(world, page):
    from msa_cache.study.compare import format_p
    from msa_cache.study.stats import holm

    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x, then the running maximum
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([0.9, 0.01]) == [0.9, 0.02] and holm([]) == []
    table = next(rows for cls, rows in _parse(page).tables if cls == "leaderboard")
    header, body = table[0], table[1:]
    at = header.index("p (Holm)")
    assert header[at - 1] == "p vs top (weighted-F1)" or header[at - 1].startswith("p vs top (")
    rows = _leaderboard_rows(world[1])
    tested = [e for e in rows if e.stats.get("dev") and e.stats["dev"].p_top is not None]
    want = dict(zip([e.label for e in tested], holm([e.stats["dev"].p_top for e in tested])))
    assert [r[at] for r in body] == [format_p(want[e.label]) if e.label in want else "—" for e in rows]
    assert "not corrected for multiple comparisons" in page and f"{len(tested)} rows are each tested" in page


def test_footer_shows_the_command_as_run(world, tmp_path):
    runs_dir = world[1]
    out = tmp_path / "my report.html"
    r = CliRunner().invoke(cli, ["report", str(runs_dir), "-o", str(out), "--resamples", "100", "--no-ensembles"])
    assert r.exit_code == 0, r.output
    import html
    import shlex

    footer = re.search(r"Written by <code>(.*?)</code>", out.read_text()).group(1)
    assert html.unescape(footer) == shlex.join(["msa-cache", "report", str(runs_dir), "--out", str(out),
                                                "--resamples", "100", "--no-ensembles"])
    api = re.search(r"Written by <code>(.*?)</code>", build_report(runs_dir, n_resamples=RESAMPLES)).group(1)
    assert api == f"msa-cache report {runs_dir} --monitor weighted-f1 --resamples {RESAMPLES}"
    given = build_report(runs_dir, n_resamples=RESAMPLES, command="msa-cache report x --explain 1")
    assert "Written by <code>msa-cache report x --explain 1</code>" in given


def test_robustness_and_transfer_sections_show_the_evaluations(world, page, tmp_path):
    import shutil

    from msa_cache.study.corrupt import parse_corruption
    from msa_cache.study.eval_table import read_evaluations, robustness_rows
    from msa_cache.study.evaluate import evaluate
    from report_world import WORLD
    from worlds import extract_toy, write_other_manifest

    assert "No corruption evaluations under" in page and "No transfer evaluations under" in page  # a hint only
    runs = tmp_path / "runs" / "toy"
    shutil.copytree(world[1], runs)
    other = write_other_manifest(tmp_path, "other", WORLD.labels())
    extract_toy(other, tmp_path, WORLD.encoders())
    quiet = {"log": lambda m: None}
    evaluate([runs], [parse_corruption("text=drop"), parse_corruption("image=drop")], **quiet)
    evaluate([runs], [], manifest=other, cache_root=tmp_path / "cache", **quiet)
    p = _parse(build_report(runs, n_resamples=RESAMPLES))
    tables = [rows for cls, rows in p.tables if cls == "evaluations"]
    robust, matrices = tables[0], tables[1:]
    rows = {(r[0], r[2], r[3]): r for r in robust[1:]}
    want = {(r["family"], r["evaluation"], r["split"]): r for r in robustness_rows(read_evaluations(runs))
            if r["kind"] != "transfer"}
    assert set(rows) == set(want) and ("late", "image-drop", "dev") in rows
    late = want[("late", "image-drop", "dev")]
    assert rows[("late", "image-drop", "dev")][6] == f"{100 * late['weighted_f1_mean']:.2f} ± {100 * late['weighted_f1_std']:.2f}"
    assert len(p.images) == 1 + 2 * len(HEADS) + 1  # + the robustness chart
    # one matrix per family and split: trained on toy, evaluated on toy (clean) and on other
    assert len(matrices) == 2 * len(HEADS)
    assert all(m[0] == ["trained on", "other", "toy"] and m[1][0] == "toy" for m in matrices)
