"""Note-onset scores of a transcription against the notes that were played (mir_eval)."""

import numpy as np
import pretty_midi

from pianoapp.io.midi import piano_notes

ONSET_TOLERANCE_S = 0.05


def sounded_notes(pm: pretty_midi.PrettyMIDI) -> list[pretty_midi.Note]:
    """What a listener (or transcriber) can hear: pedal folded in, unisons within the tolerance merged."""
    notes, last_onset = [], {}
    for n in piano_notes(pm):
        if n.start - last_onset.get(n.pitch, -np.inf) >= ONSET_TOLERANCE_S:
            notes.append(n)
            last_onset[n.pitch] = n.start
    return notes


def onset_scores(ref: list[pretty_midi.Note], est: list[pretty_midi.Note]) -> dict[str, float]:
    """Precision, recall, F1 of onsets (pitch must match, offsets ignored) and the mean onset error
    of matched notes in seconds."""
    import mir_eval

    def arrays(notes):
        onsets = np.array([n.start for n in notes], dtype=float).reshape(-1)
        intervals = np.stack([onsets, onsets + 0.1], axis=1)  # mir_eval wants offsets; they are ignored
        return intervals, pretty_midi.note_number_to_hz(np.array([n.pitch for n in notes], dtype=float))

    (ri, rp), (ei, ep) = arrays(ref), arrays(est)
    pairs = mir_eval.transcription.match_notes(ri, rp, ei, ep, onset_tolerance=ONSET_TOLERANCE_S, offset_ratio=None)
    precision = len(pairs) / len(est) if est else 0.0
    recall = len(pairs) / len(ref) if ref else 0.0
    f1 = 2 * len(pairs) / (len(ref) + len(est)) if ref or est else 0.0
    error = float(np.mean([abs(ri[i, 0] - ei[j, 0]) for i, j in pairs])) if pairs else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "onset_error_s": error}
