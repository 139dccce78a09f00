"""The Continue tab against the real piano LM in models/lm-small: its handlers called directly, as
Gradio calls them, and the service helpers they stand on. Lengths are a few seconds to stay fast."""

import pretty_midi
import pytest
import soundfile as sf

from pianoapp import constants
from pianoapp.errors import BadInputError
from pianoapp.io.audio import is_silent, write_audio
from pianoapp.io.midi import read_midi
from pianoapp.services import continue_ as service
from pianoapp.services.availability import missing_reason
from pianoapp.ui import continue_ as tab
from pianoapp.ui.components import warning_line

pytestmark = pytest.mark.skipif(missing_reason("continue") is not None, reason="models/lm-small is absent")

SAMPLING = {"temperature": 0.98, "top_p": 1.0, "min_p": 0.035}
# The handlers' outputs, in the order build() wires them.
RESULT, AUDIO, PLOT, STATUS, ACTIONS, DOWNLOAD, FROM_S = range(7)


def run(handler, *args, seconds=4, seed=0):
    return list(handler(*args, seconds, *SAMPLING.values(), seed))


@pytest.fixture(scope="module")
def prompt_path(assets_dir):
    return str(assets_dir / "mozart_k545_opening.mid")


@pytest.fixture(scope="module")
def updates(prompt_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tab, "UPDATE_EVERY_S", 0.0)  # every update the service streams reaches the page
        return run(tab.generate, prompt_path)


@pytest.fixture(scope="module")
def result(updates):
    return updates[-1][RESULT]


def bars(figure) -> dict[str, object]:
    return {t.name: t for t in figure.data if t.type == "bar"}


def test_generate_streams_a_growing_roll(updates):
    growing = [u[PLOT]["value"] for u in updates[:-1] if "value" in u[PLOT]]
    assert len(growing) >= 3
    counts = [len(bars(f)["Continuation"].y) if "Continuation" in bars(f) else 0 for f in growing]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    assert all(u[ACTIONS]["visible"] is False for u in updates[:-1])  # nothing to keep until it is done
    assert all(u[AUDIO]["value"] is None for u in updates[1:-1])  # no stale audio beside a new roll
    assert "Writing" in updates[1][STATUS]


def test_final_update_has_audio_midi_and_a_two_colour_roll(updates, result, prompt_path):
    final = updates[-1]
    assert isinstance(result, service.Continuation) and result.done and result.generated
    assert final[ACTIONS]["visible"] is True
    assert "Continued" in final[STATUS] and "seed 0" in final[STATUS]

    audio, sr = sf.read(final[AUDIO]["value"], dtype="float32")
    assert sr == constants.SAMPLE_RATE and not is_silent(audio, sr)
    assert audio.size / sr == pytest.approx(max(n.end for n in result.notes()) + 1.0, abs=0.1)  # + release

    pm = read_midi(final[DOWNLOAD])
    tracks = {inst.name: inst.notes for inst in pm.instruments}
    assert list(tracks) == ["Prompt", "Continuation"]
    assert len(tracks["Prompt"]) == len(result.prompt) == len(service.load_prompt(prompt_path)[0])
    assert len(tracks["Continuation"]) == len(result.generated)
    assert final[DOWNLOAD].endswith("mozart_k545_opening-continued.mid")

    roll = bars(final[PLOT]["value"])
    assert set(roll) == {"Prompt", "Continuation"}
    assert roll["Prompt"].marker.color != roll["Continuation"].marker.color
    assert len(roll["Continuation"].y) == len(result.generated)

    prompt_end = max(n.start for n in result.prompt)
    assert prompt_end <= min(n.start for n in result.generated)
    assert final[FROM_S]["minimum"] == round(prompt_end, 1)
    assert final[FROM_S]["maximum"] == round(prompt_end + 4, 1)
    # NumPy floats would reach the page as text
    assert {type(final[FROM_S][k]) for k in ("minimum", "maximum", "value")} == {float}


def test_keep_and_continue_grows_the_prompt(prompt_path, result):
    final = run(tab.keep_and_continue, prompt_path, result, seconds=2)[-1]
    grown = final[RESULT]
    assert len(grown.prompt) == len(result.prompt) + len(result.generated)
    assert max(n.start for n in grown.prompt) == max(n.start for n in result.generated)
    assert grown.generated and min(n.start for n in grown.generated) >= max(n.start for n in grown.prompt)
    assert len(bars(final[PLOT]["value"])["Prompt"].y) == len(grown.prompt)


def test_regenerate_keeps_everything_before_the_point(prompt_path, result):
    prompt_end = max(n.start for n in result.prompt)
    at = prompt_end + 2.5
    final = run(tab.regenerate_from, prompt_path, result, at, seed=0)[-1]
    redone = final[RESULT]
    assert final[-1] == 1  # the next seed, shown in the seed box
    assert "seed 1" in final[STATUS]

    def key(notes):
        return [(n.pitch, n.start, n.end, n.velocity) for n in notes]

    before = [n for n in result.generated if n.start < at]
    assert before and key(redone.prompt) == key(result.prompt)
    assert key([n for n in redone.generated if n.start < at]) == key(before)
    after = [n for n in redone.generated if n.start >= at]
    assert after and key(after) != key([n for n in result.generated if n.start >= at])
    assert max(n.start for n in redone.generated) < prompt_end + 4 + 0.01  # onsets stop at the end


def test_moving_the_regenerate_slider_marks_the_point(result):
    figure = tab.show_cut(result, 16.5)["value"]
    assert [(s.x0, s.x1) for s in figure.layout.shapes if s.type == "line"] == [(16.5, 16.5)]
    assert any("16.5 s" in a.text for a in figure.layout.annotations)
    assert tab.show_cut(None, 16.5) == {"__type__": "update"}  # nothing to mark before a result


def test_regenerate_past_the_end_says_so(prompt_path, result):
    prompt_end = max(n.start for n in result.prompt)
    final = run(tab.regenerate_from, prompt_path, result, prompt_end + 10, seed=0)[-1]
    assert final[STATUS].startswith("> ⚠ Regenerate from a point before the end")
    with pytest.raises(BadInputError):
        next(service.regenerate(result, from_s=prompt_end + 10, seconds=4))


def test_recording_is_transcribed_first_and_says_so(tmp_path, assets_dir):
    from pianoapp.io.audio import load_audio

    take = load_audio(assets_dir / "mozart_k545_opening.flac")[: 5 * constants.SAMPLE_RATE]
    recording = write_audio(tmp_path / "take.wav", take)
    final = run(tab.generate, str(recording), seconds=2)[-1]
    assert "transcribed to MIDI first" in final[STATUS]
    assert final[RESULT].prompt and final[RESULT].generated
    assert final[DOWNLOAD].endswith("take-continued.mid")


def _drum_only(path):
    pm = pretty_midi.PrettyMIDI()
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36 + i % 3, i * 0.25, i * 0.25 + 0.1) for i in range(16)]
    pm.instruments.append(drums)
    pm.write(str(path))


def _silent(path):
    import numpy as np

    write_audio(path, np.zeros(3 * constants.SAMPLE_RATE, np.float32))


@pytest.mark.parametrize("name, make", [
    ("empty.mid", lambda p: p.write_bytes(b"")),
    ("drums.mid", _drum_only),
    ("silence.wav", _silent),
    ("shopping-list.mid", lambda p: p.write_text("eggs, milk, a new metronome\n")),
    ("notes.txt", lambda p: p.write_text("C D E F G\n")),
])
def test_bad_opening_shows_the_services_sentence(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(BadInputError) as err:
        service.load_prompt(path)
    final = run(tab.generate, str(path))[-1]
    assert final[STATUS] == warning_line(str(err.value))
    assert "Traceback" not in final[STATUS]


def test_buttons_before_any_opening_explain_what_to_do():
    assert "Upload an opening" in run(tab.generate, None)[-1][STATUS]
    assert "Press Continue first" in run(tab.keep_and_continue, None, None)[-1][STATUS]
    assert "Press Continue first" in run(tab.regenerate_from, None, None, 20.0)[-1][STATUS]


def test_new_opening_previews_it_and_forgets_the_result(prompt_path, tmp_path):
    source, result, audio, plot, status, actions, download, _ = tab.select_source(prompt_path)
    assert source == prompt_path and result is None and download is None
    assert audio["visible"] and plot["visible"] and "122 notes" in status
    assert actions["visible"] is False
    assert tab.select_source(None, prompt_path)[0] == prompt_path  # clearing one box falls back to the other
