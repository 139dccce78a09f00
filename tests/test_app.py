"""The app shell and its services: tabs, previews of real files, error sentences, model listing."""

import json
import shutil
import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pretty_midi
import pytest
import soundfile as sf
from safetensors.numpy import save_file

from pianoapp import constants
from pianoapp.errors import CorruptFileError, EmptyFileError, UnsupportedFormatError
from pianoapp.io.audio import is_silent, write_audio
from pianoapp.io.midi import notes_to_midi, read_midi
from pianoapp.io.render import render
from pianoapp.services import catalog
from pianoapp.services.preview import preview_file
from pianoapp.ui.components import GENERIC_ERROR, show_preview, user_message, warning_line

ASAP_PERFORMANCE = "asap/Bach/Fugue/bwv_848/Lin04M.mid"  # 2 minutes, with sustain pedal


def test_build_app_has_six_tabs_and_no_torch():
    # A fresh interpreter: other tests in this session may have imported torch already.
    code = (
        "import sys, json, gradio as gr\n"
        "from pianoapp.ui import build_app\n"
        "demo = build_app()\n"
        "tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]\n"
        "print(json.dumps({'tabs': tabs, 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tabs"] == ["Search", "Match", "Continue", "Arrange", "Explore", "Models"]
    assert result["torch"] is False


def test_demo_files_in_assets_become_examples(tmp_path, monkeypatch, data_dir):
    import gradio as gr

    from pianoapp.ui import build_app
    from pianoapp.ui.components import asset_examples

    shutil.copy(data_dir / "nottingham" / "ashover1.mid", tmp_path / "tune.mid")
    write_audio(tmp_path / "take.wav", np.zeros(100, np.float32))
    (tmp_path / "README.md").write_text("not an example")
    monkeypatch.setattr(constants, "ASSETS_DIR", tmp_path)

    assert asset_examples("midi") == [str(tmp_path / "tune.mid")]
    assert asset_examples("audio", "midi") == [str(tmp_path / "take.wav"), str(tmp_path / "tune.mid")]
    demo = build_app()
    example_sets = [b for b in demo.blocks.values() if isinstance(b, gr.Dataset)]
    assert len(example_sets) == 4  # Match, Continue, and both Arrange inputs


def test_preview_midi_renders_and_draws_one_bar_per_note(data_dir):
    path = data_dir / "nottingham" / "ashover1.mid"
    pm = read_midi(path)
    n_notes = sum(len(inst.notes) for inst in pm.instruments if not inst.is_drum)

    preview = preview_file(path)

    assert preview.kind == "midi"
    sr, audio = preview.audio
    assert sr == constants.SAMPLE_RATE and audio.dtype == np.float32
    assert not is_silent(audio, sr)
    assert audio.size / sr == pytest.approx(pm.get_end_time(), abs=1.5)  # plus the release tail
    bars = [t for t in preview.figure.data if t.type == "bar"]
    assert len(bars) == 1 and len(bars[0].y) == n_notes
    assert f"{n_notes} notes" in preview.summary
    on_disk, disk_sr = sf.read(preview.wav_path, dtype="float32")
    assert disk_sr == sr and on_disk.size == audio.size


def test_preview_shades_sustain_pedal(data_dir):
    preview = preview_file(data_dir / ASAP_PERFORMANCE)
    assert any(t.name == "sustain pedal" for t in preview.figure.data)
    assert "sustain pedal" in preview.summary


def test_preview_is_cached_by_content(data_dir, tmp_path):
    original = data_dir / "nottingham" / "ashover1.mid"
    copy = shutil.copy(original, tmp_path / "renamed.mid")
    assert preview_file(copy) is preview_file(original)


def test_preview_audio_draws_spectrogram_on_the_keyboard_axis(tmp_path):
    a4 = 69
    pm = notes_to_midi([pretty_midi.Note(90, a4, 0.2, 2.2)])
    wav = write_audio(tmp_path / "a4.wav", render(pm), constants.SAMPLE_RATE)

    preview = preview_file(wav)

    assert preview.kind == "audio"
    (heatmap,) = [t for t in preview.figure.data if t.type == "heatmap"]
    pitches = np.asarray(heatmap.y)
    assert pitches[0] == constants.PIANO_PITCH_MIN and pitches[-1] == constants.PIANO_PITCH_MAX
    loudest_row = int(np.argmax(np.asarray(heatmap.z, dtype=float).mean(axis=1)))
    assert pitches[loudest_row] == a4  # the fundamental of a rendered A4 lands on the A4 row
    assert "24 kHz" in preview.summary


@pytest.mark.parametrize(
    "name, content, error, words",
    [
        ("empty.mid", b"", EmptyFileError, "is empty (0 bytes)"),
        ("notes.mid", b"these are my notes, not a MIDI file\n", CorruptFileError, "is not a MIDI file"),
        ("notes.txt", b"plain text\n", UnsupportedFormatError, "unsupported file type"),
    ],
)
def test_bad_files_give_the_user_facing_sentence(tmp_path, name, content, error, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as caught:
        preview_file(path)
    sentence = str(caught.value)
    assert words in sentence and name in sentence and "\n" not in sentence

    with pytest.warns(UserWarning, match="."):  # gr.Warning outside a request falls back to warnings.warn
        audio, plot, status = show_preview(str(path))
    assert status == warning_line(sentence)
    assert audio["visible"] is False and plot["visible"] is False


def test_show_preview_fills_the_outputs(data_dir):
    audio, plot, status = show_preview(str(data_dir / "nottingham" / "ashover1.mid"))
    assert audio["visible"] and audio["value"].endswith(".wav")
    assert plot["visible"] and isinstance(plot["value"], go.Figure)
    assert "notes" in status


def test_unexpected_errors_become_one_generic_sentence(caplog):
    assert user_message(ValueError("internal detail")) == GENERIC_ERROR
    assert "internal detail" in caplog.text  # logged for us, not shown to the user


def test_demo_score_previews_as_notes():
    from pianoapp.data.corpora import load_collection

    chorale = next(it for it in load_collection("music21") if it.meta.get("form") == "chorale")
    preview = preview_file(chorale.path)  # a MusicXML file, read through music21
    assert preview.kind == "midi" and "notes" in preview.summary
    assert not is_silent(preview.audio[1], preview.audio[0])


def test_list_models_reads_config_card_and_weights(tmp_path):
    lm = tmp_path / "lm-small"
    lm.mkdir()
    weights = {"emb": np.zeros((10, 4), np.float16), "head.bias": np.zeros(6, np.float16)}
    save_file(weights, str(lm / "model.safetensors"))
    (lm / "config.json").write_text(json.dumps({"family": "lm", "model": {"d_model": 4}}))
    (lm / "MODEL_CARD.md").write_text(
        "# lm-small\n\nDate: 2026-11-27\n\n## Metrics (test split)\n\n"
        "| metric | model | 4-gram baseline |\n|---|---:|---:|\n"
        "| NLL per token | 2.31 | 2.80 |\n| onset NLL | 1.10 | 1.50 |\n\n## Data\n| not | metrics |\n"
    )
    half = tmp_path / "half-written"  # no model card yet: not listed
    half.mkdir()
    (half / "config.json").write_text("{}")

    (model,) = catalog.list_models(tmp_path)

    assert model["name"] == "lm-small" and model["family"] == "lm"
    assert model["params"] == 10 * 4 + 6
    assert model["metrics"] == {
        "NLL per token": "2.31 · 2.80 (4-gram baseline)",
        "onset NLL": "1.10 · 1.50 (4-gram baseline)",
    }
    assert model["date"] == "2026-11-27"
    assert catalog.list_models(tmp_path / "absent") == []


def test_list_models_reads_the_metrics_the_trainer_writes(tmp_path):
    """The trainer's cards list metrics as `- name: value` bullets; the Models tab must show them."""
    from pianoapp.train.trainer import TrainConfig, model_card

    folder = tmp_path / "lm-tiny"
    folder.mkdir()
    (folder / "config.json").write_text('{"family": "lm"}')
    state = {"step": 3, "tokens_seen": 96, "train_seconds": 1.0}
    (folder / "MODEL_CARD.md").write_text(model_card(
        "lm-tiny", TrainConfig(), state, {}, {"test_nll": 2.5, "val_loss": 2.4}, "## Data\n\nsome text",
        params=10, hardware="CPU", command="pianoapp train lm", unit="tokens"))
    (model,) = catalog.list_models(tmp_path)
    assert model["metrics"]["test_nll"].startswith("2.5")
    assert model["metrics"]["val_loss"].startswith("2.4")
