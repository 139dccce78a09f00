"""The `pianoapp` command line: exit codes, one-line errors, clean stdout, real files end to end."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from pianoapp import constants
from pianoapp.cli import main

PIANOAPP = Path(sys.executable).parent / "pianoapp"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pianoapp: "), err
    assert "Traceback" not in err


def test_console_script_help_is_fast_and_lists_the_contract():
    proc = subprocess.run([PIANOAPP, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("index", "search", "match", "continue", "arrange", "explore", "train", "eval"):
        assert command in proc.stdout


def test_render_then_transcribe_round_trip(tmp_path, assets_dir, capsys):
    wav = tmp_path / "k545.wav"
    code, out, err = run(["render", assets_dir / "mozart_k545_opening.mid", "--out", wav], capsys)
    assert code == 0 and out == ""
    audio, sr = sf.read(wav)
    assert sr == constants.SAMPLE_RATE and np.abs(audio).max() > 0.01
    mid = tmp_path / "k545.mid"
    code, out, _ = run(["transcribe", wav, "--out", mid], capsys)
    assert code == 0 and out == ""
    assert len(pretty_midi.PrettyMIDI(str(mid)).instruments[0].notes) > 50


@pytest.mark.parametrize("content", [b"", b"this is a shopping list, not a song\n", b"MThd\x00\x00\x00\x06\x00"])
def test_bad_midi_exits_2_with_one_line(tmp_path, content, capsys):
    bad = tmp_path / "song.mid"
    bad.write_bytes(content)
    code, out, err = run(["render", bad, "--out", tmp_path / "x.wav"], capsys)
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert not (tmp_path / "x.wav").exists()


def test_missing_soundfont_exits_2(tmp_path, assets_dir, capsys, monkeypatch):
    monkeypatch.setenv("PIANOAPP_SOUNDFONT", str(tmp_path / "nowhere.sf2"))
    code, _, err = run(["render", assets_dir / "bach_chorale_bwv66.6.mid", "--out", tmp_path / "x.wav"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "soundfont" in err.lower()


def test_silent_recording_exits_2(tmp_path, capsys):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(constants.SAMPLE_RATE * 3, np.float32), constants.SAMPLE_RATE)
    code, _, err = run(["transcribe", silent, "--out", tmp_path / "x.mid"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "silent" in err


def test_a_capability_without_its_model_says_not_available(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(constants.REPO_ROOT)
    monkeypatch.setattr(constants, "MODELS_DIR", tmp_path)  # a checkout without the arranger's checkpoint
    code, out, err = run(["arrange", "assets/folk_lead_sheet.mid", "--out", str(tmp_path / "x.mid")], capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert "not available yet" in err


def test_eval_with_missing_model_exits_2(tmp_path, capsys):
    code, out, err = run(["eval", "lm", "--model", tmp_path / "none", "--json"], capsys)
    assert code == 2 and out == ""
    assert_one_line_error(err)


def test_train_rejects_unknown_setting(capsys):
    code, _, err = run(["train", "lm", "--config", "tiny", "--set", "learning_speed=9"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "learning_speed" in err


@pytest.mark.skipif(not (constants.MODELS_DIR / "lm-small" / "model.safetensors").is_file(),
                    reason="models/lm-small is not shipped in this checkout")
def test_continue_is_seeded_and_keeps_the_prompt(tmp_path, assets_dir, capsys):
    outs = []
    for name, seed in (("a.mid", 0), ("b.mid", 0), ("c.mid", 1)):
        code, out, _ = run(["continue", assets_dir / "pedal_arpeggios.mid", "--seconds", 4, "--seed", seed,
                            "--out", tmp_path / name], capsys)
        assert code == 0 and out == ""
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "a.mid"))
    prompt, continuation = pm.instruments
    assert prompt.name == "Prompt" and continuation.name == "Continuation"
    assert len(prompt.notes) == len(pretty_midi.PrettyMIDI(str(assets_dir / "pedal_arpeggios.mid")).instruments[0].notes)
    last_prompt_onset = max(n.start for n in prompt.notes)
    assert continuation.notes and min(n.start for n in continuation.notes) >= last_prompt_onset - 0.01
    assert max(n.start for n in continuation.notes) <= last_prompt_onset + 4 + 0.01


def test_continue_refuses_a_drum_only_prompt(tmp_path, capsys):
    pm = pretty_midi.PrettyMIDI()
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36, i * 0.5, i * 0.5 + 0.1) for i in range(8)]
    pm.instruments.append(drums)
    path = tmp_path / "drums.mid"
    pm.write(str(path))
    code, _, err = run(["continue", path, "--out", tmp_path / "x.mid"], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "drums" in err


def test_json_stdout_is_one_document(tmp_path, capsys):
    """Logs go to stderr: with --json, stdout parses as JSON even when the command fails.

    CI=1 because pyfluidsynth then prints where it found the library, as it does on CI machines."""
    env = {**os.environ, "PIANOAPP_DEBUG": "", "CI": "1"}
    proc = subprocess.run([PIANOAPP, "search", "waltz", "--json", "--index", str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert proc.stdout == ""  # no results document on failure, and nothing else either
    assert proc.returncode == 2 and "not a Pianoapp index" in proc.stderr
