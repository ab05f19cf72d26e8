"""mcugen explore's index.html in a real browser: Debian's Chromium, headless, driven by
playwright (PyPI; it launches the system's binary, it downloads no browser of its own). A small
sweep of the digits CNN (examples/) for the hls target, whose cost is the report's latency
estimate, so no toolchain runs and all three plots exist. The page must load without a console
or page error, its images must decode, its project links must resolve. And the plots' accuracy
axis must stop at 100 % (checked on plots.py's figures, matplotlib's Agg backend)."""
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np
import pytest

from conftest import IN_CI, REPO, require_tool

from mcugen.explore.plots import tradeoff_plot
from mcugen.explore.store import INDEX, PLOTS

EXAMPLES = REPO / "examples"
MODEL = EXAMPLES / "digits_cnn.onnx"
SPACE = """
[[point]]
scheme = "uniform"
bits = "W8A8"
[[point]]
scheme = "power"
bits = "W4A4"
first_last_bits = "same"
weight_storage = "codes"
"""
TIMEOUT_MS = 30_000


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed (pip install -e '.[test]' installs it)")
        pytest.skip("playwright not installed")
    return sync_playwright


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The explore directory of a two-point sweep (about 2 s)."""
    from mcugen.explore import explore
    root = tmp_path_factory.mktemp("explore_browser")
    x = np.load(EXAMPLES / "digits_cnn_inputs.npy")
    (root / "space.toml").write_text(SPACE)
    out = root / "explore"
    done = explore(MODEL, x[:16], x, labels=np.load(EXAMPLES / "digits_cnn_labels.npy"),
                   target="hls", space=str(root / "space.toml"), out=out)
    assert [r["status"] for r in done.records] == ["ok", "ok"], [r.get("error") for r in done.records]
    return out, done.records


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _sync_playwright()
    require_tool("chromium")
    # Debian's launcher script (it adds --disable-dev-shm-usage where /dev/shm is small)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                              headless=True, timeout=TIMEOUT_MS)
        yield chromium
        chromium.close()


def _path_of(url: str) -> Path:
    parts = urlparse(url)
    assert parts.scheme == "file", url
    return Path(url2pathname(unquote(parts.path)))


def test_index_html_loads_cleanly_and_its_images_and_links_resolve(browser, sweep):
    out, records = sweep
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.goto((out / INDEX).as_uri(), wait_until="load")

    images = page.evaluate("""() => Array.from(document.images).map(i => ({
        src: i.getAttribute('src'), url: i.src, complete: i.complete,
        width: i.naturalWidth, height: i.naturalHeight, shown: i.getBoundingClientRect().width}))""")
    assert sorted(i["src"] for i in images) == sorted(PLOTS)
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["shown"] > 300, image               # laid out, not collapsed
        png = _path_of(image["url"]).read_bytes()        # the size the PNG's header declares
        assert (image["width"], image["height"]) == (int.from_bytes(png[16:20], "big"),
                                                      int.from_bytes(png[20:24], "big"))

    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert sorted(_path_of(h) for h in hrefs) == sorted(out / r["project"] for r in records)
    for href in hrefs:
        assert (_path_of(href) / ".mcugen").is_file(), href
    page.screenshot(path=str(out.parent / "index.png"), full_page=True)
    for href in hrefs:                                  # and the browser opens each of them
        page.goto(href, wait_until="load")              # raises on net::ERR_FILE_NOT_FOUND
        assert page.title().startswith("Index of"), href
    page.close()
    assert problems == []


def _records(accuracies):
    """Points along flash, each on the front; accuracy is top-1 (a fraction)."""
    options = dict(scheme="power", wbits=8, abits=8, first_last_bits=8, weight_storage="auto",
                   encoder="auto", method="powerquant")
    return [{"id": f"p{i}", "fits": True, "options": options, "top1": a, "flash_bytes": 1000 * (i + 1)}
            for i, a in enumerate(sorted(accuracies))]


META = {"quality": "top1", "higher_is_better": True, "model": "m.onnx", "board": "b", "target": "rv32"}


@pytest.mark.parametrize("accuracies, float_quality", [
    ([0.99], None),                     # one point: matplotlib's own limits were 94-104
    ([0.97, 0.995, 1.0], 1.0),          # points and the float model at 100 %
    ([1.0, 1.0], None),                 # every point at 100 %
    ([0.0, 0.5, 1.0], None),            # the whole range
])
def test_accuracy_axis_stops_at_100_percent(tmp_path, accuracies, float_quality):
    records = _records(accuracies)
    fig = tradeoff_plot(records, dict(META, float_quality=float_quality), "flash_bytes", "flash",
                        1024, [r["id"] for r in records], tmp_path / "plot.png")
    (ax,) = fig.axes
    bottom, top = ax.get_ylim()
    values = [100 * a for a in accuracies + ([float_quality] if float_quality else [])]
    assert 0 <= bottom <= min(values) and max(values) <= top <= 100
    if max(values) < 100:
        assert top > max(values)                 # the margin above the top point is kept
    # the top point is drawn whole, even on the axis's edge: 3 px above its centre (inside its
    # ~4 px radius, outside the axes when it sits at 100 %) is its red
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    x, y = ax.transData.transform((records[-1]["flash_bytes"] / 1024, 100 * records[-1]["top1"]))
    row, col = int(round(pixels.shape[0] - y)) - 3, int(round(x))
    red, green, blue = pixels[row, col, :3]
    assert red > 180 and green < 90 and blue < 90, (row, col, pixels[row, col])


def test_output_error_axis_is_not_clamped(tmp_path):
    """output_error is no percentage: its axis is matplotlib's."""
    records = [dict(r, output_error=e) for r, e in zip(_records([0.1, 0.2]), (1.5, 3.0))]
    meta = dict(META, quality="output_error", higher_is_better=False, float_quality=None)
    fig = tradeoff_plot(records, meta, "flash_bytes", "flash", 1024, ["p0"], tmp_path / "plot.png")
    assert fig.axes[0].get_ylim()[1] > 3.0
