"""Make the demo files in assets/: three public-domain score excerpts from music21's corpus, two pieces
written here, a Nottingham lead sheet, and short recordings rendered from them and from a POP909
piano passage. Deterministic; rerun to rebuild.

    python assets/make_assets.py
"""

import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
from music21 import bar, corpus, stream

from pianoapp.constants import DEFAULT_DATA_DIR, SAMPLE_RATE
from pianoapp.io.audio import write_audio
from pianoapp.io.midi import notes_to_midi, read_midi, write_midi
from pianoapp.io.render import render

HERE = Path(__file__).resolve().parent

# (file, music21 corpus work, first and last measure); tempo is the score's own
EXCERPTS = [
    ("bach_chorale_bwv66.6.mid", "bach/bwv66.6", 0, 4),
    ("mozart_k545_opening.mid", "mozart/k545/movement1_exposition", 1, 8),
    ("joplin_maple_leaf_rag_opening.mid", "joplin/maple_leaf_rag", 1, 8),
]
RECORDING = ("mozart_k545_opening.flac", "mozart_k545_opening.mid", "MuseScore_General")
# The Arrange tab's contrasting style references: ragtime (stride bass, 12 notes a second), gentle
# broken chords (3 a second, one at a time) and a pop ballad's piano. Each kept under 200 KB: (file,
# source, seconds, soundfont); the POP909 one names a test-split song and its first bar.
RAGTIME_REFERENCE = ("joplin_maple_leaf_rag_opening.flac", "joplin_maple_leaf_rag_opening.mid", 7.0, "FluidR3_GM")
ARPEGGIO_REFERENCE = ("pedal_arpeggios.flac", "pedal_arpeggios.mid", 10.0, "FluidR3_GM")
POP_REFERENCE = ("pop909_piano_reference.flac", ("pop909/159", 8), 8.0, "FluidR3_GM")
# (file, Nottingham tune, bars): a whole 16-bar Playford dance in 4/4, D major, six chords
NOTTINGHAM_LEAD_SHEET = ("nottingham_playford14_lead_sheet.mid", "playford14", 16)


def score_excerpt(work: str, first: int, last: int) -> pretty_midi.PrettyMIDI:
    """Measures first..last of a corpus score as a piano MIDI, through the same reader users get."""
    score = corpus.parse(work).measures(first, last)
    for measure in score.recurse().getElementsByClass(stream.Measure):
        # an excerpt can cut a repeat in half, which music21 then refuses to expand
        measure.leftBarline = None if isinstance(measure.leftBarline, bar.Repeat) else measure.leftBarline
        measure.rightBarline = None if isinstance(measure.rightBarline, bar.Repeat) else measure.rightBarline
    with tempfile.TemporaryDirectory() as tmp:
        path = score.write("midi", fp=Path(tmp) / "excerpt.mid")
        pm = read_midi(path)
    for inst in pm.instruments:
        inst.program = 0
    return pm


def pedal_arpeggios() -> pretty_midi.PrettyMIDI:
    """Broken chords C – Am – F – G7 then a C chord, one bar each at 90 qpm, pedal changed every bar.

    Every key is released at once (staccato): what rings is the pedal, so the file shows (and tests)
    pedal handling. Velocities and timing vary a little (seeded), as a pianist's would.
    """
    rng = np.random.default_rng(0)
    chords = [(36, 48, 52, 55, 60, 64), (33, 45, 52, 57, 60, 64), (29, 41, 48, 53, 57, 60),
              (31, 43, 50, 53, 59, 65)]
    bar_s = 4 * 60.0 / 90.0
    notes, pedal = [], []
    for k, chord in enumerate(chords):
        t0 = k * bar_s
        pedal += [pretty_midi.ControlChange(64, 0, max(0.0, t0 - 0.05)), pretty_midi.ControlChange(64, 100, t0 + 0.08)]
        up_and_down = chord + chord[-2:0:-1]
        for i, pitch in enumerate(up_and_down):
            start = max(0.0, t0 + i * bar_s / len(up_and_down) + rng.normal(0, 0.008))
            velocity = int(np.clip(62 + 14 * (i == 0) + rng.normal(0, 5), 30, 110))
            notes.append(pretty_midi.Note(velocity, pitch, start, start + 0.15))
    end = len(chords) * bar_s
    notes += [pretty_midi.Note(70, p, end, end + bar_s) for p in (36, 48, 55, 60, 64, 72)]
    pedal += [pretty_midi.ControlChange(64, 0, end - 0.05), pretty_midi.ControlChange(64, 0, end + bar_s)]
    pm = notes_to_midi(notes, tempo=90.0)
    pm.instruments[0].control_changes = pedal
    return pm


def lead_sheet() -> pretty_midi.PrettyMIDI:
    """An 8-bar tune in D major in 6/8 (quaver = 200 per minute), written here: a melody track and a
    block-chord track, the shape of a Nottingham lead sheet (what the arranger takes)."""
    eighth = 60.0 / 200.0
    # (pitch, quavers) per bar, 6 quavers a bar
    melody = [
        [(62, 1), (66, 1), (69, 1), (74, 2), (73, 1)], [(71, 1), (69, 1), (66, 1), (67, 3)],
        [(69, 1), (67, 1), (66, 1), (64, 2), (66, 1)], [(67, 1), (66, 1), (64, 1), (62, 3)],
        [(62, 1), (66, 1), (69, 1), (74, 2), (76, 1)], [(78, 1), (76, 1), (74, 1), (71, 3)],
        [(69, 1), (71, 1), (69, 1), (67, 1), (66, 1), (64, 1)], [(62, 6)],
    ]
    harmony = [(50, 54, 57), (55, 59, 62), (57, 61, 64), (50, 54, 57),
               (50, 54, 57), (47, 50, 54), (57, 61, 64), (50, 54, 57)]  # D G A D D Bm A D
    tune, chords = [], []
    for k, (line, chord) in enumerate(zip(melody, harmony)):
        t = k * 6 * eighth
        chords += [pretty_midi.Note(56, p, t, t + 6 * eighth - 0.02) for p in chord]
        for pitch, length in line:
            tune.append(pretty_midi.Note(84, pitch, t, t + length * eighth - 0.03))
            t += length * eighth
    return notes_to_midi({"melody": tune, "chords": chords}, tempo=100.0)


def nottingham_lead_sheet(tune: str, bars: int) -> pretty_midi.PrettyMIDI | None:
    """The first `bars` bars of a Nottingham tune as it is (a melody track, then a block-chord track),
    tracks named, in its tempo and metre; None when the data is not at DEFAULT_DATA_DIR."""
    path = DEFAULT_DATA_DIR / "nottingham" / f"{tune}.mid"
    if not path.is_file():
        return None
    source = read_midi(path)
    end = float(source.get_downbeats()[bars]) if len(source.get_downbeats()) > bars else source.get_end_time()
    tracks = {
        name: [pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, end)) for n in inst.notes if n.start < end]
        for name, inst in zip(("melody", "chords"), source.instruments)
    }
    pm = notes_to_midi(tracks, tempo=float(source.get_tempo_changes()[1][0]))
    pm.time_signature_changes = source.time_signature_changes[:1]
    return pm


def pop909_piano(song_id: str, first_bar: int, seconds: float) -> pretty_midi.PrettyMIDI | None:
    """`seconds` of a POP909 song's PIANO track (sustain pedal folded in) from a downbeat; None when
    the data is not at DEFAULT_DATA_DIR."""
    from pianoapp.data.arrangement import load_songs
    from pianoapp.data.sequences import array_to_notes

    if not (DEFAULT_DATA_DIR / "pop909").is_dir():
        return None
    song = next(s for s in load_songs("test") if s.song_id == song_id)
    t0 = int(song.downbeats[first_bar])
    piano = song.piano[(song.piano[:, 0] >= t0) & (song.piano[:, 0] < t0 + seconds * 1000)] - [t0, t0, 0, 0]
    notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, seconds)) for n in array_to_notes(piano)]
    return notes_to_midi(notes, tempo=song.tempo_bpm)


def faded(audio: np.ndarray, seconds: float, fade_s: float = 0.3) -> np.ndarray:
    """The first `seconds` of a recording, faded out over its last `fade_s`."""
    out = audio[: round(seconds * SAMPLE_RATE)].copy()
    n = min(len(out), round(fade_s * SAMPLE_RATE))
    out[len(out) - n :] *= np.linspace(1, 0, n, dtype=np.float32)
    return out


def main() -> None:
    made = []
    for name, work, first, last in EXCERPTS:
        made.append(write_midi(score_excerpt(work, first, last), HERE / name))
    made.append(write_midi(pedal_arpeggios(), HERE / "pedal_arpeggios.mid"))
    made.append(write_midi(lead_sheet(), HERE / "folk_lead_sheet.mid"))
    name, tune, bars = NOTTINGHAM_LEAD_SHEET
    tune_pm = nottingham_lead_sheet(tune, bars)
    if tune_pm is None:
        print(f"{name}: Nottingham data not found at {DEFAULT_DATA_DIR}; keeping the shipped file")
    else:
        made.append(write_midi(tune_pm, HERE / name))
    out, source, soundfont = RECORDING
    made.append(write_audio(HERE / out, render(read_midi(HERE / source), soundfont=soundfont)))
    for out, source, seconds, soundfont in (RAGTIME_REFERENCE, ARPEGGIO_REFERENCE):
        made.append(write_audio(HERE / out, faded(render(read_midi(HERE / source), soundfont=soundfont), seconds)))
    out, (song_id, first_bar), seconds, soundfont = POP_REFERENCE
    pop = pop909_piano(song_id, first_bar, seconds)
    if pop is None:
        print(f"{out}: POP909 data not found at {DEFAULT_DATA_DIR}; keeping the shipped file")
    else:
        made.append(write_audio(HERE / out, faded(render(pop, soundfont=soundfont), seconds)))
    for path in made:
        print(f"{path.name:36s} {path.stat().st_size / 1024:6.1f} KB")


if __name__ == "__main__":
    main()
