"""The real app in a real browser: `python app.py` on a free port, driven by Chromium through Playwright.

Screenshots of every tab go to test-artifacts/ (gitignored) for a human to look at.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
TABS = ["Search", "Match", "Continue", "Arrange", "Explore", "Models"]
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "PIANOAPP_HOME": str(tmp_path_factory.mktemp("home"))}  # the user's library, kept apart
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not answer on {url} within 60 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url)
        page.get_by_role("tab", name="Search").wait_for(timeout=30_000)
        yield page
        browser.close()


def _open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()
    panel = page.get_by_role("tabpanel").filter(visible=True)
    panel.locator(".tab-intro").first.wait_for(timeout=10_000)
    return panel


def test_every_tab_renders(page):
    for name in TABS:
        panel = _open_tab(page, name)
        assert panel.locator(".tab-intro").first.inner_text().strip()
        if name in ("Search", "Models"):  # their tables fill on page load
            panel.get_by_role("gridcell").first.wait_for(timeout=45_000)
        page.screenshot(path=str(ARTIFACTS / f"tab-{name.lower()}.png"), full_page=True)


def test_demo_collection_row_previews(page):
    panel = _open_tab(page, "Search")
    panel.get_by_role("gridcell").first.click()  # Gradio draws rows as ARIA grid cells
    _expect_preview(panel)
    page.screenshot(path=str(ARTIFACTS / "search-preview.png"), full_page=True)


def test_search_query_ranks_rows_and_uploads_join(page, data_dir):
    panel = _open_tab(page, "Search")
    engine = "text–music search" if (REPO / "models" / "bind" / "model.safetensors").is_file() else "metadata search"
    assert engine in panel.locator(".notice").first.inner_text()  # says which engine answers
    panel.get_by_label("Describe the music").fill("Bach chorale in four voices")
    panel.get_by_role("button", name="Search", exact=True).click()
    panel.locator(".preview-status", has_text="closest pieces").first.wait_for(timeout=60_000)
    first_row = [c.inner_text() for c in panel.get_by_role("row").nth(1).get_by_role("gridcell").all()]
    assert first_row[1] == "Bach" and 0 < float(first_row[3]) <= 1, first_row
    page.screenshot(path=str(ARTIFACTS / "search-results.png"), full_page=True)

    panel.get_by_text("Add your own files").click()
    panel.locator("input[type=file][multiple]").set_input_files(str(data_dir / "nottingham" / "waltzes10.mid"))
    panel.get_by_text("waltzes10.mid").first.wait_for(timeout=15_000)  # uploaded
    panel.get_by_role("button", name="Add to my library").click()
    panel.locator(".preview-status", has_text="Your library").first.wait_for(timeout=60_000)
    panel.get_by_role("gridcell", name="your files").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "search-upload.png"), full_page=True)


def test_midi_upload_previews(page, data_dir):
    panel = _open_tab(page, "Continue")
    panel.locator("input[type=file]").first.set_input_files(str(data_dir / "nottingham" / "ashover1.mid"))
    _expect_preview(panel)
    assert "notes" in panel.locator(".preview-status").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "continue-upload.png"), full_page=True)


def test_demo_file_example_previews(page):
    from pianoapp.services.preview import preview_file
    from pianoapp.ui.components import asset_examples

    examples = asset_examples("midi")
    if not examples:
        pytest.skip("no demo MIDI files in assets/")
    summary = preview_file(examples[0]).summary  # what the page must show for this very file
    panel = _open_tab(page, "Continue")  # the first example: on the first page of examples
    panel.get_by_role("button", name=Path(examples[0]).name).click()
    panel.locator(".preview-status", has_text=summary).first.wait_for(timeout=30_000)
    _expect_preview(panel)


def test_bad_upload_shows_one_sentence(page, tmp_path):
    fake = tmp_path / "shopping-list.mid"
    fake.write_text("eggs, milk, a new metronome\n")
    panel = _open_tab(page, "Arrange")
    panel.locator("input[type=file]").first.set_input_files(str(fake))
    status = panel.locator(".preview-status", has_text="shopping-list.mid").first
    status.wait_for(timeout=15_000)
    assert "is not a MIDI file" in status.inner_text()
    assert panel.locator(".js-plotly-plot").count() == 0
    page.screenshot(path=str(ARTIFACTS / "arrange-bad-upload.png"), full_page=True)


def test_recording_is_matched_to_its_piece_and_span(page, tmp_path):
    """A demo piece played in a soundfont the matcher never heard, with noise, cut from 5 s in."""
    import numpy as np

    from pianoapp import constants
    from pianoapp.data.augment import add_noise
    from pianoapp.index import Index
    from pianoapp.io.audio import write_audio
    from pianoapp.io.midi import read_midi
    from pianoapp.io.render import render
    from pianoapp.services import library

    piece = next(it for it in Index.open(library.demo_index_dir()).items if it["title"] == "BWV 1.6")
    audio = render(read_midi(library.locate(piece["path"]), max_seconds=float("inf")), soundfont="TimGM6mb")
    clip = audio[5 * constants.SAMPLE_RATE: 17 * constants.SAMPLE_RATE]
    wav = write_audio(tmp_path / "my recording.wav", add_noise(clip, np.random.default_rng(0), snr_db=20))
    panel = _open_tab(page, "Match")
    panel.locator("input[type=file]").first.set_input_files(str(wav))
    _expect_preview(panel)
    assert panel.locator(".js-plotly-plot .heatmaplayer").count() == 1  # a recording shows its spectrogram
    panel.get_by_role("button", name="Find the piece").click()
    panel.locator(".preview-status", has_text="BWV 1.6").first.wait_for(timeout=120_000)
    title = panel.get_by_role("gridcell", name="BWV 1.6").first
    title.wait_for(timeout=30_000)
    results = title.locator("xpath=ancestor::*[@role='grid'][1]")  # the demo-file examples are a table too
    first_row = [c.inner_text() for c in results.get_by_role("row").nth(1).get_by_role("gridcell").all()]
    assert first_row[0] == "BWV 1.6" and first_row[-1] == "yes", first_row
    assert first_row[3].startswith("0:05") or first_row[3].startswith("0:04"), first_row  # the span
    panel.get_by_role("gridcell", name="BWV 1.6").first.click()
    panel.locator(".preview-status", has_text="laid over yours").first.wait_for(timeout=60_000)
    legend = panel.locator(".js-plotly-plot .legendtext").all_text_contents()
    assert "your recording" in legend, legend
    assert panel.locator("audio[src]").count() >= 2  # the recording and the matched passage
    page.mouse.move(0, 0)
    page.screenshot(path=str(ARTIFACTS / "match-result.png"), full_page=True)


def test_continue_grows_a_roll_then_plays(page, assets_dir):
    panel = _open_tab(page, "Continue")
    if panel.locator("input[type=file]").count() == 0:  # an earlier test left a file in the box
        panel.get_by_role("button", name="Clear").first.click()
    panel.locator("input[type=file]").first.set_input_files(str(assets_dir / "mozart_k545_opening.mid"))
    panel.locator(".preview-status", has_text="122 notes").first.wait_for(timeout=30_000)
    length = panel.get_by_label("number input for Length to add (seconds)")
    length.fill("5")
    length.press("Enter")
    panel.get_by_role("button", name="Continue", exact=True).click()
    panel.locator(".preview-status", has_text="Continued").first.wait_for(timeout=120_000)
    _expect_preview(panel)
    legend = panel.locator(".js-plotly-plot .legendtext")
    assert sorted(legend.all_text_contents()) == ["Continuation", "Prompt"]  # SVG text
    panel.get_by_role("button", name="Download MIDI").wait_for(timeout=10_000)
    panel.get_by_role("button", name="Keep this and continue").wait_for(timeout=10_000)
    page.mouse.move(0, 0)  # no hover highlight in the picture
    page.screenshot(path=str(ARTIFACTS / "continue-result.png"), full_page=True)


def test_two_contrasting_references_give_two_arrangements(page):
    """The demo tune under the ragtime reference and under the gentle broken chords: the app reads
    each reference's style, says what it heard, and the shipped arranger writes two different parts.
    (Which is busier depends on the seed on this tune: bench/arranger_contrast.py measures the
    direction over 24 lead sheets.)"""
    import re

    panel = _open_tab(page, "Arrange")
    bars = panel.get_by_label("number input for Bars to arrange")
    counts, heard_as = {}, {}
    for demo, heard, length in (("ragtime (Maple Leaf Rag)", "joplin", "0:07"),
                                ("gentle broken chords", "pedal_arpeggios", "0:10")):
        panel.get_by_role("button", name=demo).click()
        # The reference's preview says the new recording's length before Arrange may read it.
        panel.locator(".preview-status", has_text=f"Recording · {length}").first.wait_for(timeout=30_000)
        bars.fill("8")
        bars.press("Enter")
        panel.get_by_role("button", name="Arrange", exact=True).click()
        status = panel.locator(".preview-status", has_text=f"Heard in {heard}").first
        status.wait_for(timeout=120_000)
        text = status.inner_text()
        counts[heard] = int(re.search(r"([\d,]+) accompaniment notes", text)[1].replace(",", ""))
        heard_as[heard] = re.search(r"Heard in \S+: ([\d.]+) notes a second", text)[1]
        _expect_preview(panel)
        page.mouse.move(0, 0)
        page.screenshot(path=str(ARTIFACTS / f"arrange-{heard}.png"), full_page=True)
    assert float(heard_as["joplin"]) > 3 * float(heard_as["pedal_arpeggios"]), heard_as
    assert counts["joplin"] != counts["pedal_arpeggios"] and min(counts.values()) > 20, counts


def _expect_preview(panel):
    panel.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    audio = panel.locator("audio[src]").first
    audio.wait_for(state="attached", timeout=30_000)
    assert audio.get_attribute("src")
