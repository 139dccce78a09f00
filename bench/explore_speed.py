"""Explore map speed at 5,000 points: fit, placing new points, and drawing from the saved layout.

The points are the demo index's 275 real embeddings (MiniLM over item descriptions) repeated to 5,000,
each copy jittered (Gaussian, sigma 0.02 per dimension, then unit length again) and saved as a real
index with the items' metadata, so the map has the demo's cluster structure at 18× its size. Fitted
maps go to a temporary cache. Prints:

- UMAP fit: the first in the process (numba compiles) and a second one (steady state); t-SNE fit;
- placing 1 and 100 new points with the fitted UMAP's transform (the first call compiles too),
  against refitting, which is what placing them would cost without a saved fit;
- drawing from the saved layout: the whole `umap_map` call (index read, layout read, figure built),
  the figure's JSON (what the app sends to the browser), and, when Chromium and Playwright are
  installed, headless Chromium drawing it (plotly.js already loaded, as in the app) and opening the
  standalone HTML page (plotly.js parsed too).

Goal: 5,000 points drawn in ≤ 5 s after the first fit.

    python bench/explore_speed.py [--points 5000] [--seed 0]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")


def make_index(folder: Path, n: int, seed: int):
    from pianoapp.index import Index
    from pianoapp.services import library
    from pianoapp.services.library import demo_index_dir

    demo = Index.open(demo_index_dir())
    rng = np.random.default_rng(seed)
    rows = np.resize(np.arange(len(demo)), n)
    embeddings = demo.embeddings[rows] + 0.02 * rng.normal(size=(n, demo.dim)).astype(np.float32)
    items = [{**demo.items[r], "id": f"{demo.items[r]['id']}-{k}"} for k, r in enumerate(rows)]
    index = Index.create(folder, library.SPACE, demo.dim)
    index.add(items, embeddings)
    index.save()
    return index


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """The median wall time of `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


REDRAW_JS = """async () => {
  const gd = document.querySelector('.js-plotly-plot');
  const start = performance.now();
  await Plotly.newPlot(gd, gd.data, gd.layout);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return (performance.now() - start) / 1000;
}"""


def browser_draw_s(html: Path) -> tuple[float, float] | None:
    """Headless Chromium: seconds from opening the page (plotly.js inside it is parsed too) until the
    WebGL plot is drawn, and the median of 3 redraws of the figure with plotly.js already loaded (as
    in the app, where Gradio has loaded it). None without Chromium or Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.is_file():
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        start = time.perf_counter()
        page.goto(html.as_uri())
        page.wait_for_function("() => { const gd = document.querySelector('.js-plotly-plot');"
                               " return gd && gd._fullLayout && gd.querySelector('canvas'); }", timeout=60_000)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        opened = time.perf_counter() - start
        redraw = statistics.median(page.evaluate(REDRAW_JS) for _ in range(3))
        browser.close()
    return opened, redraw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # fitted maps: a fresh, temporary cache
        from pianoapp.services import explore

        folder = Path(tmp) / "index"
        index = make_index(folder, args.points, args.seed)
        print(f"{len(index):,} points: the demo's {len({it['path'] for it in index.items})} real embeddings, "
              "repeated and jittered")
        cache = Path(os.environ["XDG_CACHE_HOME"])

        def refit(method: str) -> float:
            for stale in cache.rglob("layout.json"):
                stale.unlink()
            return explore.umap_map(folder, method=method, seed=args.seed).fit_s

        first = refit("umap")
        steady = refit("umap")
        tsne = refit("tsne")
        print(f"UMAP fit: {first:6.1f} s first in the process (numba compiles), {steady:6.1f} s again; "
              f"t-SNE fit {tsne:6.1f} s")
        refit("umap")  # leave a UMAP fit in the cache for what follows

        rng = np.random.default_rng(args.seed + 1)
        for n in (1, 1, 100):  # the first call compiles the transform
            queries = index.embeddings[rng.integers(len(index), size=n)] + 0.02 * rng.normal(size=(n, index.dim))
            extras = [explore.Extra(f"q{k}", q.astype(np.float32)) for k, q in enumerate(queries)]
            result = explore.umap_map(folder, seed=args.seed, extras=extras)
            print(f"place {n:3d} point{'s' if n > 1 else ' '} by transform: {result.place_s * 1000:7.1f} ms "
                  f"(refitting instead: {steady:.1f} s, {steady / max(result.place_s, 1e-6):.0f}x longer)")

        for colour in ("source", "tempo"):
            call_s, result = timed(lambda c=colour: explore.umap_map(folder, colour_by=c, seed=args.seed), repeats=5)
            json_s, payload = timed(result.figure.to_json, repeats=5)
            html = Path(tmp) / f"map-{colour}.html"
            explore.write_html([result.figure], html, title="bench")
            server = call_s + json_s
            print(f"draw from the saved layout, colour {colour} ({len(result.figure.data)} traces): umap_map "
                  f"{call_s:.2f} s (figure {result.draw_s:.2f} s) + JSON {json_s:.2f} s ({len(payload) / 1e6:.1f} MB) "
                  f"= {server:.2f} s on the server (refit instead: {steady:.1f} s)")
            browser = browser_draw_s(html)
            if browser is None:
                print("  browser: not measured (no Chromium or Playwright)")
            else:
                opened, redraw = browser
                print(f"  browser: {redraw:.2f} s to draw with plotly.js loaded (server + browser {server + redraw:.2f} s); "
                      f"{opened:.2f} s to open the standalone page, plotly.js included")


if __name__ == "__main__":
    main()
