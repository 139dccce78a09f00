"""The rule-based arranger: the baseline a learned arranger must beat, and a fallback that needs no
weights. It lives beside the learned models because it answers the same call (a lead sheet in, an
accompaniment out), not beside the data code.

For every chord span of a bar: a block chord (bass plus the chord in close position) where the
span starts, that is on each chord change and restated at each downbeat; then, beat by beat until
the span ends, the bass on the beat and an Alberti-style broken chord (lowest, highest, middle,
highest tone) on each subdivision: eighths in simple metres, triplet eighths (the dotted beat's
three quavers) in compound ones. The chord sits just below the lowest melody note sounding in its
span and every note ends with the span, so the melody stays the top line throughout. No chord
(N.C.) is silence.
"""

import pretty_midi

from pianoapp.io.leadsheet import QUALITIES, LeadSheet, arrangement_midi

BASS_LOW = 36  # C2: the bass is the lowest chord-bass pitch from here up
CHORD_CEILING = 72  # C5: the top of the chord when no melody sounds above it
VELOCITY_BASS, VELOCITY_BLOCK, VELOCITY_BROKEN = 70, 62, 54
ACCENT = 6  # added on each downbeat
ALBERTI = (0, -1, 1, -1)  # voicing indices: lowest, highest, middle, highest


def voicing(root: int, quality: str, ceiling: int) -> list[int]:
    """The chord's tones in close position, each the highest pitch of its class at or below `ceiling`."""
    return sorted(ceiling - (ceiling - (root + i)) % 12 for i in QUALITIES[quality])


def arrange(sheet: LeadSheet) -> list[pretty_midi.Note]:
    """The accompaniment of a lead sheet (see the module docstring), sorted by onset."""
    beats = sheet.beats_per_bar
    subdivisions = 3 if beats != int(sheet.metre.split("/")[0]) else 2  # compound metres count dotted beats
    notes: list[pretty_midi.Note] = []
    for t0, t1 in zip(sheet.downbeats.tolist(), sheet.bar_ends.tolist()):
        beat = (t1 - t0) / beats
        step = beat / subdivisions
        for chord in sheet.chords:
            a, b = max(chord.start, t0), min(chord.end, t1)
            if chord.root is None or b - a < 1e-3:
                continue
            above = [n.pitch for n in sheet.melody if n.start < b and n.end > a]
            tones = voicing(chord.root, chord.quality, min([CHORD_CEILING + 1, *above]) - 1)
            bass_pc = chord.root if chord.bass is None else chord.bass
            bass = BASS_LOW + (bass_pc - BASS_LOW) % 12
            while bass >= tones[0] and bass - 12 >= 21:
                bass -= 12
            accent = ACCENT if abs(a - t0) < 1e-6 else 0
            # Block chord until the next beat (or the span's end).
            first_beat = t0 + (int((a - t0) / beat + 1e-6) + 1) * beat
            block_end = min(first_beat, b)
            notes += [pretty_midi.Note(VELOCITY_BLOCK + accent, p, a, block_end) for p in tones]
            notes.append(pretty_midi.Note(VELOCITY_BASS + accent, bass, a, block_end))
            # Broken chord over the remaining beats.
            time, k = first_beat, 0
            while time < b - 1e-6:
                notes.append(pretty_midi.Note(VELOCITY_BASS, bass, time, min(time + beat, b)))
                for s in range(subdivisions):
                    start = time + s * step
                    if start >= b - 1e-6:
                        break
                    pitch = tones[ALBERTI[k % len(ALBERTI)]]
                    notes.append(pretty_midi.Note(VELOCITY_BROKEN, pitch, start, min(start + step, b)))
                    k += 1
                time += beat
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def arrange_midi(sheet: LeadSheet) -> pretty_midi.PrettyMIDI:
    """Melody and rule-based accompaniment on two tracks."""
    return arrangement_midi(sheet, arrange(sheet))
