"""`specfit explore` in a real browser: load the page, click a pixel, see its spectrum.

Runs the CLI as a subprocess on a free port, drives Debian's chromium through playwright, and
always kills the server. Also refreshes docs/img/explorer.png (the README screenshot).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
TITLE_RE = re.compile(r"pixel x=(\d+), y=(\d+)")

# Every plotted spectrum curve (holoviews names the columns after the curve's dimensions:
# frequency and power) with the y range of the plot that draws it.
_CURVES_JS = """
() => {
  const out = [];
  for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
    for (const m of doc.all_models) {
      if (m.renderers === undefined || m.y_range === undefined) continue;
      for (const r of m.renderers) {
        const src = r.data_source;
        if (!src || !src.data) continue;
        const d = src.data instanceof Map ? Object.fromEntries(src.data) : src.data;
        if (d.frequency !== undefined && d.power !== undefined) {
          out.push({p: Array.from(d.power), y0: m.y_range.start, y1: m.y_range.end});
        }
      }
    }
  }
  return out;
}
"""


# The plots' titles and colour-bar titles.
_LABELS_JS = """
() => {
  const out = {titles: [], colorbars: []};
  for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
    for (const m of doc.all_models) {
      const kind = m.type || (m.constructor && m.constructor.name);
      if (kind === "Title") out.titles.push(m.text);
      if (kind === "ColorBar") out.colorbars.push(m.title);
    }
  }
  return out;
}
"""


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"specfit explore exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"specfit explore did not listen on port {port} within {timeout} s")


def _title(page) -> tuple[int, int] | None:
    # The Markdown pane renders into its own shadow root: pierce to the heading.
    loc = page.locator(".specfit-pixel h3")
    if loc.count() == 0:
        return None
    text = loc.first.inner_text()
    m = TITLE_RE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_explore_click_shows_pixel_spectrum(demo_store, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    from specfit.store import open_results

    ds = open_results(demo_store)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "specfit.cli", "explore", str(demo_store), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so the kill below reaches any child too
    )
    try:
        _wait_port(port, proc, timeout=60)
        # Bound to the loopback interface only (the default of `specfit explore`).
        import psutil

        listening = [
            c.laddr
            for pr in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            for c in pr.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1400})
                page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
                page.wait_for_selector(".specfit-pixel", timeout=60_000)
                # Panel renders into shadow roots: poll through playwright's piercing locator.
                deadline = time.monotonic() + 30
                while _title(page) is None and time.monotonic() < deadline:
                    time.sleep(0.25)
                start = _title(page)
                assert start == (nx // 2, ny // 2)  # the explorer opens on the centre pixel
                heat = page.locator(".specfit-heatmap").first
                box = heat.bounding_box()
                assert box is not None and box["width"] > 200
                # Upper-left part of the map frame (left of centre, above centre).
                page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.27 * box["height"])
                deadline = time.monotonic() + 30
                while _title(page) == start and time.monotonic() < deadline:
                    time.sleep(0.25)
                clicked = _title(page)
                assert clicked is not None and clicked != start, "the click did not select a pixel"
                ix, iy = clicked
                assert ix < nx // 2 and iy > ny // 2, f"pixel {clicked} is not where we clicked"
                # The spectrum panel now plots that pixel's stored spectrum.
                want = ds["power"].values[:, iy, ix].astype(float)
                deadline = time.monotonic() + 30
                matched = None
                while matched is None and time.monotonic() < deadline:
                    for c in page.evaluate(_CURVES_JS):
                        p_ = np.asarray(c["p"], dtype=float)
                        if p_.size == want.size and np.allclose(p_, want, rtol=1e-6):
                            matched = c
                    time.sleep(0.25)
                assert matched is not None, "no curve equals the clicked pixel's stored spectrum"
                # ...inside the plot's y range (re-ranged for this pixel, not the first one's).
                deadline = time.monotonic() + 10
                pos = want[want > 0]
                while time.monotonic() < deadline:
                    rng = [
                        (c["y0"], c["y1"])
                        for c in page.evaluate(_CURVES_JS)
                        if np.allclose(np.asarray(c["p"], float), want, rtol=1e-6)
                    ]
                    if rng and rng[0][0] <= pos.min() and rng[0][1] >= pos.max():
                        break
                    time.sleep(0.25)
                assert rng and rng[0][0] <= pos.min() and rng[0][1] >= pos.max(), rng
                page.mouse.move(2, 2)  # no hover tooltip over the map in the screenshot
                time.sleep(1.0)  # let the other panels finish redrawing before the screenshot
                shot = tmp_path / "explorer.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 50_000
                if os.environ.get("SPECFIT_UPDATE_DOCS_IMG") == "1":
                    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, ROOT / "docs" / "img" / "explorer.png")
                # Another map: the heat map's title names it and its unit; no colour bar keeps
                # the first map's name (they are drawn once; one once read "m1 index" over
                # the bump periods).
                assert (
                    "m1 index: click a pixel; box-select a region"
                    in page.evaluate(_LABELS_JS)["titles"]
                )
                select = page.locator("select").first
                values = select.evaluate("s => Array.from(s.options).map(o => o.value)")
                select.select_option([v for v in values if "m2_bump_period" in v][0])
                want_title = "m2 bump period [min]: click a pixel; box-select a region"
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if want_title in page.evaluate(_LABELS_JS)["titles"]:
                        break
                    time.sleep(0.25)
                labels = page.evaluate(_LABELS_JS)
                assert want_title in labels["titles"], labels
                assert "m1 index" not in labels["colorbars"], labels
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
