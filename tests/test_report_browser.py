"""The report in a real headless browser (Chromium): the leaderboard table is laid out with every
row, and every inlined image decodes and renders. Skips where no Chromium is installed (.ci/run
installs the Debian package `chromium`)."""
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from msa_cache.report import build_report
from msa_cache.study.compare import finished_entries, summarise
from report_world import HEADS

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# After load, write what the browser rendered into the DOM, where --dump-dom shows it.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var table = document.querySelector("table.leaderboard");
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: imgs.length,
    rendered: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    widths: imgs.map(function (i) { return i.naturalWidth; }),
    shown: imgs.filter(function (i) { return i.getBoundingClientRect().width > 50; }).length,
    rows: table ? table.querySelectorAll("tbody tr").length : -1,
    cells: table ? table.querySelectorAll("tbody td").length : -1,
    table_height: table ? table.getBoundingClientRect().height : 0
  });
  document.body.appendChild(probe);
});
</script>"""


@pytest.fixture(scope="module")
def chromium():
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); "
                    "install the Debian package `chromium` to run this test")
    return found


def _run(chromium, tmp_path, *args) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"{chromium} failed ({r.returncode}): {r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def report(report_world, tmp_path_factory):
    runs_dir = report_world[1]
    page = build_report(runs_dir, n_resamples=200)
    rows = summarise(finished_entries(runs_dir), "weighted-f1", n_resamples=200)
    return page, len(rows)


def test_leaderboard_and_images_render_in_chromium(chromium, report, tmp_path):
    page, n_rows = report
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    r = _run(chromium, tmp_path, "--window-size=1280,2000", "--virtual-time-budget=5000", "--dump-dom",
             probed.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the probe did not run; DOM starts {r.stdout[:500]!r}"
    got = json.loads(html.unescape(m.group(1)))
    assert got["rows"] == n_rows and got["cells"] >= n_rows * 8
    assert got["table_height"] > 15 * n_rows  # laid out, one visible line per row at least
    assert got["images"] == 1 + 2 * len(HEADS)  # bar chart + a confusion matrix and curves per family
    assert got["rendered"] == got["images"] and min(got["widths"]) > 200
    assert got["shown"] == got["images"]  # none collapsed to nothing by the CSS


def test_screenshot_is_not_blank(chromium, report, tmp_path):
    page, _ = report
    src = tmp_path / "report.html"
    src.write_text(page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    _run(chromium, tmp_path, "--window-size=1280,3000", f"--screenshot={shot}", src.as_uri())
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (3000, 1280)
    dark = img < 200
    assert dark.mean() > 0.02, "the page looks blank"
    # the bar chart's coloured bars lie in the top 3000 px: some rows are far from white and from grey text
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    saturated = (rgb.max(-1) - rgb.min(-1)) > 80
    assert saturated.sum() > 2000, "no coloured pixels: the charts did not render"
